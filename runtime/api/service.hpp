#pragma once
// The client API, version 2 (`spool serve`): JSON over the HTTP server of
// runtime/http, under /api/v2.
//
//   POST  /api/v2/jobs                enqueue one job (an object) or many
//                                     ({"jobs": [...]} or an array); the
//                                     Idempotency-Key header keys them
//   GET   /api/v2/jobs                ?client= &campaign= &state= &limit= &after=
//                                     (newest first; "next" is the cursor)
//   GET   /api/v2/jobs/{id}           state, stages with outputs, costs,
//                                     errors; ETag / If-None-Match (304), and
//                                     ?wait=S (<= 30) long-polls for a change
//   POST  /api/v2/jobs/{id}/approve   {"note"} optional
//   POST  /api/v2/jobs/{id}/reject    {"reason"} required: the job is cancelled
//   POST  /api/v2/jobs/{id}/cancel
//   PATCH /api/v2/jobs/{id}           {"priority": "high|normal|low"}
//   POST  /api/v2/upload-asset        the bytes of one asset (at most 50 MiB,
//                                     streamed to disk; PNG, JPEG, WebP, MP4,
//                                     MOV, WAV or MP3 by their first bytes);
//                                     ?client= for an admin token
//   GET   /api/v2/assets/{client}/{sha256}.{ext}   with Range support
//   GET/PUT /api/v2/brands/{client}   {"guidelines": {...}}: what every stage
//                                     of the client's later jobs gets
//   GET/PUT /api/v2/campaigns/{id}    {"brief": {...}, "client_id"}: the same
//                                     for a campaign
//   GET   /api/v2/jobs/{id}/files/{stage}/{name}   a file a stage wrote
//                                     (storyboard frames, the video), ranges
//   GET   /api/v2/status              stages, tasks, money, providers (admin)
//   GET   /                           the status page (runtime/api/status_page.hpp)
//
// Errors are {"error": {"code", "message", "field"?}} with the HTTP status
// that fits (400 invalid_request, 401 unauthorized, 404 not_found, 409
// conflict, 413, 429 rate_limited with Retry-After, 503 unavailable).
//
// Auth: "Authorization: Bearer <token>" (runtime/api/tokens.hpp). A
// client's token sees and changes only that client's jobs (another
// client's job is a 404, as if it did not exist); an admin token sees all.
// An open service (open_without_tokens, and no token exists yet) treats
// every request as admin; its caller listens on loopback only.
//
// Job views are cached and kept fresh by the database's NOTIFY spool_task
// (task_changed): a poll of a job that did not change is answered from
// memory, and a long poll is answered the moment its job changes.

#include "runtime/config/config.hpp"
#include "runtime/http/server.hpp"

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace spool::api {

struct service_options {
  std::string database_url;
  /// The pipeline new jobs get (stages, prices for the estimates).
  std::shared_ptr<const config::snapshot> config;
  /// The data directory stage programs write under (absolute): job files
  /// are served from <data_dir>/tasks/<id>/<stage>/.
  std::string data_dir;
  /// Where assets are stored (absolute): <assets_dir>/<client>/<sha256>.<ext>,
  /// uploads arriving in <assets_dir>/.incoming.
  std::string assets_dir;
  /// While no live token exists, requests need none and act as admin (the
  /// caller sets this only when it listens on loopback). Checked every few
  /// seconds: the first token created closes the service.
  bool open_without_tokens = false;
  /// Database connections for requests.
  std::size_t connections = 8;
  /// Requests a second per principal (token, or peer address when open),
  /// and the burst above it.
  double requests_per_s = 50;
  double burst = 100;
  /// The longest long poll (?wait=S).
  double max_wait_s = 30;
  /// The most jobs one POST may enqueue.
  std::size_t max_jobs_per_request = 1000;
  /// A cached job view older than this is read again even without a NOTIFY
  /// (a run that started changes no task; its outcome does).
  std::chrono::milliseconds max_view_age{2000};
};

class service {
public:
  explicit service(service_options opts);
  ~service(); // stop()
  service(const service&) = delete;
  service& operator=(const service&) = delete;

  /// Adds the /api/v2 routes.
  void add_routes(http::router& r);

  /// For http::server_options::streamed_body: the most bytes the body of
  /// `req` may have when it is an upload (streamed to assets_dir/.incoming);
  /// an upload without a valid token (or over its rate) is refused before
  /// a byte of it is stored.
  std::optional<std::size_t> streamed_body(const http::request& req,
                                           std::optional<http::response>& refuse) const;

  /// Tasks that changed (NOTIFY spool_task); empty: every task (a missed
  /// notification, a '*' payload).
  void task_changed(const std::vector<int64_t>& ids);

  /// Answers every waiting long poll and stops the background threads.
  /// Idempotent.
  void stop();

  /// Database statements run for job views and lists so far.
  std::uint64_t view_queries() const noexcept;

  /// The service's metrics in the Prometheus text format: requests by
  /// method and status (spool_api_requests_total), database reads of job
  /// views and lists (spool_api_view_reads_total), long polls waiting
  /// (spool_api_long_polls).
  std::string render_metrics() const;

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

} // namespace spool::api
