#pragma once
// The status page `spool serve` answers at /: plain HTML, CSS and
// JavaScript compiled into the binary (no build step, nothing fetched from
// elsewhere). It reads the client API: the pipeline's stages with
// running/limit and counts, providers and the day's budget
// (/api/v2/status, every 2 s), a job list with filters, and a job's stages
// with their outputs (storyboard frames, the video) and the approve/reject
// buttons, kept live by long polls (?wait= with the job's ETag). With API
// tokens it asks for one and keeps it in the browser's localStorage.

#include <string_view>

namespace spool::api {

std::string_view status_page_html();

} // namespace spool::api
