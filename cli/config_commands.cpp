// spool config check|push|history|show|rollback, and loading configs for the
// other commands (--config FILE or --config db).

#include "cli/commands.hpp"
#include "runtime/config/config.hpp"
#include "runtime/local_db.hpp"
#include "runtime/pg/connection.hpp"
#include "runtime/store/config_store.hpp"
#include "runtime/utf8.hpp"

#include <boost/json.hpp>

#include <pwd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace spool::cli {

namespace json = boost::json;

namespace {

constexpr const char* nothing_stored =
  "no configuration stored; push one with `spool config push FILE`";

/// Whether the configuration sets a non-empty database_url. An invalid one
/// is read as plain JSON (with comments and trailing commas), so that the
/// problem is listed with all the others.
bool sets_database_url(const std::string& content, const config::load_result& res) {
  if (res.ok())
    return !res.config->database_url.empty();
  for (auto& p : res.problems)
    if (p.path == "database_url")
      return false; // already refused (e.g. not a string)
  json::parse_options lenient;
  lenient.allow_comments = true;
  lenient.allow_trailing_commas = true;
  std::error_code ec;
  auto doc = json::parse(content, ec, {}, lenient);
  if (ec || !doc.is_object())
    return false;
  auto* url = doc.as_object().if_contains("database_url");
  return url != nullptr && url->is_string() && !url->as_string().empty();
}

/// Parses `content` as a configuration to store: everything config check
/// refuses, plus what only a stored configuration may not hold (it is read
/// by workers that are already connected, from many hosts).
config::load_result validate_for_store(const std::string& content) {
  if (content.find('\0') != std::string::npos)
    return {nullptr, {config::problem{"", "contains a NUL byte"}}};
  if (auto at = invalid_utf8_at(content); at != std::string::npos)
    return {nullptr,
            {config::problem{"", "not valid UTF-8 at byte " + std::to_string(at)}}};
  auto res = config::parse(content);
  if (!sets_database_url(content, res))
    return res;
  config::problem url{"database_url",
                      "not allowed in a pushed configuration; workers connect before they "
                      "read it (use SPOOL_DATABASE_URL or --database-url)"};
  // In registry order: after the document's own problems and data_dir's.
  auto at = std::find_if(res.problems.begin(), res.problems.end(), [](auto& p) {
    return !p.path.empty() && p.path.rfind("data_dir", 0) != 0;
  });
  res.problems.insert(at, std::move(url));
  res.config = nullptr;
  return res;
}

/// `what:` followed by every problem on its own line, as load_config does.
std::string problems_text(const std::string& what, const std::vector<config::problem>& ps) {
  auto msg = what + ":";
  for (auto& p : ps)
    msg += "\n  " + config::to_string(p);
  return msg;
}

/// A connection for the config commands; a database without migration
/// 0004 says what to do instead of "relation does not exist".
class config_db {
public:
  explicit config_db(const global_options& g) : conn_{database_url(g)} {}

  template <class F>
  auto operator()(F&& fn) {
    try {
      return fn(conn_);
    } catch (const pg::error& e) {
      if (e.sqlstate() == "42P01" || e.sqlstate() == "42703") // undefined table/column
        throw pg::error(e.context(),
                        e.message() + " (the database lacks stored configurations: run "
                                      "`spool migrate up`)",
                        e.sqlstate());
      throw;
    }
  }

private:
  pg::connection conn_;
};

/// user@host of whoever runs this: $USER, else the uid's name.
std::string pushed_by() {
  std::string user;
  if (const char* u = std::getenv("USER"); u != nullptr && *u != '\0')
    user = u;
  else if (const passwd* pw = ::getpwuid(::getuid()); pw != nullptr)
    user = pw->pw_name;
  else
    user = "uid " + std::to_string(::getuid());
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == '\0')
    std::snprintf(host, sizeof host, "unknown-host");
  auto who = sanitize_utf8(user + "@" + host);
  if (who.size() > 256) // the table's bound; names are ASCII in practice
    who.resize(256);
  return who;
}

/// Refuses a note the table would refuse, or one that breaks the history
/// table (a line break, a control character).
void check_note(const std::string& note) {
  if (auto at = invalid_utf8_at(note); at != std::string::npos)
    throw std::invalid_argument("--note: not valid UTF-8 at byte " + std::to_string(at));
  std::size_t chars = 0;
  for (unsigned char ch : note) {
    if (ch < 0x20 || ch == 0x7f)
      throw std::invalid_argument("--note: must be one line without control characters");
    chars += (ch & 0xC0) != 0x80;
  }
  if (chars > store::max_note_chars)
    throw std::invalid_argument("--note: at most " + std::to_string(store::max_note_chars)
                                + " characters, got " + std::to_string(chars));
}

/// Reads a file to push, or throws naming it.
std::string read_config_file(const std::string& path) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto st = fs::status(path, ec);
  if (ec || !fs::exists(st))
    throw std::invalid_argument("FILE: " + path + " does not exist");
  if (fs::is_directory(st))
    throw std::invalid_argument("FILE: " + path + " is a directory, not a config file");
  std::ifstream in{path, std::ios::binary};
  if (!in)
    throw std::invalid_argument("FILE: cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  if (in.bad())
    throw std::invalid_argument("FILE: cannot read " + path);
  auto content = std::move(text).str();
  if (content.size() > store::max_config_bytes)
    throw std::invalid_argument("FILE: " + path + " has " + std::to_string(content.size())
                                + " bytes; a stored configuration holds at most "
                                + std::to_string(store::max_config_bytes) + " (1 MiB)");
  return content;
}

/// Stores a validated configuration unless the newest version equals it;
/// prints what happened.
int store_config(config_db& db, const std::string& content, const config::snapshot& cfg,
                 const std::string& note) {
  auto out = db([&](pg::connection& c) {
    return store::push_config_if_changed(c, content, cfg.version, pushed_by(), note);
  });
  if (!out.created) {
    std::cout << "unchanged: version " << out.version << " has checksum " << cfg.version
              << "; nothing stored\n";
    return 0;
  }
  std::cout << "pushed version " << out.version << " (checksum " << cfg.version << ")";
  if (!note.empty())
    std::cout << ": " << note;
  std::cout << "\n";
  return 0;
}

/// "no stored configuration version 9 (the newest is 4)".
std::string unknown_version(pg::connection& c, int64_t version) {
  auto latest = store::latest_config(c);
  if (!latest)
    return "VERSION: no stored configuration version " + std::to_string(version) + "; "
           + nothing_stored;
  return "VERSION: no stored configuration version " + std::to_string(version)
         + " (the newest is " + std::to_string(latest->version) + ")";
}

} // namespace

std::string resolve_config_path(const std::string& path) {
  namespace fs = std::filesystem;
  if (fs::exists(path) || fs::path{path}.is_absolute())
    return path;
  auto in_home = spool_home() / path; // e.g. config/spool.json from anywhere
  return fs::exists(in_home) ? in_home.string() : path;
}

std::shared_ptr<const config::snapshot> load_config(const std::string& path) {
  auto resolved = resolve_config_path(path);
  auto res = config::load_file(resolved);
  if (!res.ok())
    throw std::invalid_argument(problems_text("invalid configuration " + resolved, res.problems));
  return res.config;
}

loaded_config load_config_source(const global_options& g, const std::string& path) {
  if (path != stored_config_source) {
    auto resolved = resolve_config_path(path);
    auto cfg = load_config(resolved);
    return {std::move(cfg),
            std::filesystem::absolute(resolved).lexically_normal().string(), 0};
  }
  auto stored = config_db{g}([](pg::connection& c) { return store::latest_config(c); });
  if (!stored)
    throw std::invalid_argument("--config db: " + std::string{nothing_stored});
  auto res = validate_for_store(stored->content);
  if (!res.ok())
    throw std::invalid_argument(problems_text(
      "--config db: stored configuration version " + std::to_string(stored->version)
        + " is not valid for this spool binary (push a fixed one)",
      res.problems));
  return {res.config, stored_config_source, stored->version};
}

int config_check(const std::string& file) {
  auto path = resolve_config_path(file);
  auto res = config::load_file(path);
  if (!res.ok()) {
    for (auto& p : res.problems)
      std::cout << config::to_string(p) << "\n";
    std::cout << path << ": " << res.problems.size() << " problem(s)\n";
    return 1;
  }
  std::cout << path << ": ok (" << res.config->stages.size() << " stages, version "
            << res.config->version << ")\n";
  return 0;
}

int config_push(const global_options& g, const std::string& file, const std::string& note) {
  check_note(note);
  auto path = resolve_config_path(file);
  // Read once, validate and store those bytes (load_file would read the
  // file a second time, which may have changed in between).
  auto content = read_config_file(path);
  auto res = validate_for_store(content);
  if (!res.ok())
    throw std::invalid_argument(
      problems_text("invalid configuration " + path + ", nothing was stored", res.problems));
  config_db db{g}; // connects only now: an invalid file needs no database
  return store_config(db, content, *res.config, note);
}

int config_history(const global_options& g, int limit) {
  if (limit < 1 || limit > 1000)
    throw std::invalid_argument("--limit: must be 1..1000, got " + std::to_string(limit));
  auto rows = config_db{g}([&](pg::connection& c) { return store::config_history(c, limit); });
  if (rows.empty()) {
    std::cout << nothing_stored << "\n";
    return 0;
  }
  std::printf("%7s  %-16s  %-20s  %-24s  %s\n", "version", "checksum", "pushed_at", "pushed_by",
              "note");
  for (auto& r : rows)
    std::printf("%7lld  %-16s  %-20s  %-24s  %s\n", static_cast<long long>(r.version),
                r.checksum.c_str(), r.pushed_at.c_str(), r.pushed_by.c_str(), r.note.c_str());
  return 0;
}

int config_show(const global_options& g, std::optional<int64_t> version) {
  std::string content;
  config_db{g}([&](pg::connection& c) {
    auto found = version ? store::config_at(c, *version) : store::latest_config(c);
    if (!found)
      throw std::invalid_argument(version ? unknown_version(c, *version)
                                          : std::string{nothing_stored});
    content = std::move(found->content);
  });
  // The bytes as pushed: `spool config show 3 > old.json` gives the file back.
  std::cout << content << std::flush;
  return 0;
}

int config_rollback(const global_options& g, int64_t version) {
  config_db db{g};
  auto old = db([&](pg::connection& c) {
    auto found = store::config_at(c, version);
    if (!found)
      throw std::invalid_argument(unknown_version(c, version));
    return *found;
  });
  auto res = validate_for_store(old.content);
  if (!res.ok())
    throw std::invalid_argument(problems_text(
      "stored configuration version " + std::to_string(version)
        + " is not valid for this spool binary, nothing was stored",
      res.problems));
  return store_config(db, old.content, *res.config, "rollback to " + std::to_string(version));
}

} // namespace spool::cli
