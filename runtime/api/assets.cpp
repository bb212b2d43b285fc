#include "runtime/api/assets.hpp"

#include <openssl/evp.h>

#include <charconv>
#include <cstdio>
#include <fstream>
#include <memory>
#include <stdexcept>

namespace spool::api {

std::optional<asset_type> sniff_type(std::string_view h) {
  auto at = [&](std::size_t off, std::string_view magic) {
    return h.size() >= off + magic.size() && h.substr(off, magic.size()) == magic;
  };
  if (at(0, "\x89PNG\r\n\x1a\n"))
    return asset_type{"png", "image/png"};
  if (at(0, "\xff\xd8\xff"))
    return asset_type{"jpg", "image/jpeg"};
  if (at(0, "RIFF") && at(8, "WEBP"))
    return asset_type{"webp", "image/webp"};
  if (at(0, "RIFF") && at(8, "WAVE"))
    return asset_type{"wav", "audio/wav"};
  if (at(4, "ftypqt  "))
    return asset_type{"mov", "video/quicktime"};
  if (at(4, "ftyp"))
    return asset_type{"mp4", "video/mp4"};
  // MP3: an ID3v2 tag, or a frame header (11 sync bits, MPEG version not
  // reserved, layer III).
  if (at(0, "ID3"))
    return asset_type{"mp3", "audio/mpeg"};
  if (h.size() >= 2 && static_cast<unsigned char>(h[0]) == 0xff
      && (static_cast<unsigned char>(h[1]) & 0xe0) == 0xe0
      && (static_cast<unsigned char>(h[1]) & 0x18) != 0x08
      && (static_cast<unsigned char>(h[1]) & 0x06) == 0x02)
    return asset_type{"mp3", "audio/mpeg"};
  return std::nullopt;
}

std::string_view mime_of_extension(std::string_view ext) {
  if (ext == "png")
    return "image/png";
  if (ext == "jpg")
    return "image/jpeg";
  if (ext == "webp")
    return "image/webp";
  if (ext == "wav")
    return "audio/wav";
  if (ext == "mov")
    return "video/quicktime";
  if (ext == "mp4")
    return "video/mp4";
  if (ext == "mp3")
    return "audio/mpeg";
  return {};
}

bool valid_asset_name(std::string_view name) {
  auto dot = name.find('.');
  if (dot != 64)
    return false;
  for (char c : name.substr(0, 64))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')))
      return false;
  return !mime_of_extension(name.substr(65)).empty();
}

std::string sha256_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot read " + path);
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx{EVP_MD_CTX_new(), EVP_MD_CTX_free};
  if (!ctx || EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1)
    throw std::runtime_error("SHA-256 is not available");
  char buf[1 << 16];
  while (in) {
    in.read(buf, sizeof buf);
    if (in.gcount() > 0)
      EVP_DigestUpdate(ctx.get(), buf, static_cast<std::size_t>(in.gcount()));
  }
  if (in.bad())
    throw std::runtime_error("reading " + path + " failed");
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx.get(), md, &len);
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    char hex[3];
    std::snprintf(hex, sizeof hex, "%02x", md[i]);
    out += hex;
  }
  return out;
}

range_request parse_range(std::string_view h, std::uint64_t size) {
  range_request out;
  if (!h.starts_with("bytes=") || h.find(',') != std::string_view::npos)
    return out;
  h.remove_prefix(6);
  auto dash = h.find('-');
  if (dash == std::string_view::npos)
    return out;
  auto num = [](std::string_view s, std::uint64_t& v) {
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    return ec == std::errc{} && p == s.data() + s.size() && !s.empty();
  };
  std::uint64_t a = 0, b = 0;
  auto first = h.substr(0, dash), last = h.substr(dash + 1);
  if (first.empty()) { // the last b bytes
    if (!num(last, b))
      return out;
    if (b == 0 || size == 0) {
      out.satisfiable = false;
      out.range = byte_range{};
      return out;
    }
    out.range = byte_range{size > b ? size - b : 0, size - 1};
    return out;
  }
  if (!num(first, a) || (!last.empty() && (!num(last, b) || b < a)))
    return out;
  if (a >= size) {
    out.satisfiable = false;
    out.range = byte_range{};
    return out;
  }
  out.range = byte_range{a, last.empty() ? size - 1 : std::min(b, size - 1)};
  return out;
}

} // namespace spool::api
