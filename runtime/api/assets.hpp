#pragma once
// Uploaded assets (reference images, clips, voice samples): their type told
// by the content's first bytes, never by a file name; stored once per
// client by the SHA-256 of their bytes; served with byte ranges.
//
// No HTTP here: runtime/api/service.cpp answers the requests.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace spool::api {

/// The largest asset: 50 MiB (52,428,800 bytes).
inline constexpr std::size_t max_asset_bytes = 50u << 20;

struct asset_type {
  std::string_view extension; // "png"
  std::string_view mime;      // "image/png"
};

/// The type of content starting with `head` (its first 16 bytes or all of
/// it): PNG, JPEG, WebP, MP4, MOV, WAV or MP3; nullopt for anything else.
std::optional<asset_type> sniff_type(std::string_view head);

/// The MIME type of a stored asset's extension; empty when unknown.
std::string_view mime_of_extension(std::string_view ext);

/// Whether `name` is a stored asset's file name: 64 hex digits, '.', a
/// known extension (nothing that could leave its directory).
bool valid_asset_name(std::string_view name);

/// The SHA-256 of a file in hex; throws std::runtime_error when it cannot
/// be read.
std::string sha256_file(const std::string& path);

/// One byte range of a file of `size` bytes.
struct byte_range {
  std::uint64_t first = 0;
  std::uint64_t last = 0; // inclusive
};

/// A Range header ("bytes=a-b", "bytes=a-", "bytes=-n") against a file of
/// `size` bytes. nullopt: no usable range (absent, several ranges, or not
/// in bytes): send the whole file. `satisfiable` false: the range lies past
/// the end (416).
struct range_request {
  std::optional<byte_range> range;
  bool satisfiable = true;
};
range_request parse_range(std::string_view header, std::uint64_t size);

} // namespace spool::api
