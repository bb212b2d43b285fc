#include "runtime/pg/connection.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <utility>

namespace spool::pg {

// -- parameters ------------------------------------------------------------------

param to_param(double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.17g", x);
  return std::string{buf};
}

namespace {

void append_quoted(std::string& out, std::string_view s) {
  out += '"';
  for (char c : s) {
    if (c == '"' || c == '\\')
      out += '\\';
    out += c;
  }
  out += '"';
}

} // namespace

std::string array_literal(const std::vector<int64_t>& xs) {
  std::string out = "{";
  for (size_t i = 0; i < xs.size(); ++i) {
    if (i)
      out += ',';
    out += std::to_string(xs[i]);
  }
  return out + "}";
}

std::string array_literal(const std::vector<double>& xs) {
  std::string out = "{";
  for (size_t i = 0; i < xs.size(); ++i) {
    if (i)
      out += ',';
    out += *to_param(xs[i]);
  }
  return out + "}";
}

std::string array_literal(const std::vector<std::string>& xs) {
  std::string out = "{";
  for (size_t i = 0; i < xs.size(); ++i) {
    if (i)
      out += ',';
    append_quoted(out, xs[i]);
  }
  return out + "}";
}

std::string array_literal(const std::vector<std::optional<std::string>>& xs) {
  std::string out = "{";
  for (size_t i = 0; i < xs.size(); ++i) {
    if (i)
      out += ',';
    if (xs[i])
      append_quoted(out, *xs[i]);
    else
      out += "NULL";
  }
  return out + "}";
}

std::string quote_ident(std::string_view name) {
  std::string out = "\"";
  for (char c : name) {
    if (c == '"')
      out += '"';
    out += c;
  }
  return out + "\"";
}

// -- result ----------------------------------------------------------------------

result::result(pg_result* res) : res_(res, &PQclear) {
}

int result::rows() const noexcept {
  return res_ ? PQntuples(res_.get()) : 0;
}

int result::columns() const noexcept {
  return res_ ? PQnfields(res_.get()) : 0;
}

int64_t result::affected() const {
  const char* s = res_ ? PQcmdTuples(res_.get()) : "";
  int64_t n = 0;
  std::from_chars(s, s + std::strlen(s), n);
  return n;
}

int result::column(std::string_view name) const {
  int n = columns();
  for (int i = 0; i < n; ++i)
    if (name == PQfname(res_.get(), i))
      return i;
  throw error("reading result", "no column named " + std::string{name});
}

std::string_view result::column_name(int col) const {
  return PQfname(res_.get(), col);
}

unsigned result::type_oid(int col) const {
  return PQftype(res_.get(), col);
}

bool result::is_null(int row, int col) const {
  return PQgetisnull(res_.get(), row, col) != 0;
}

std::string_view result::text(int row, int col) const {
  return {PQgetvalue(res_.get(), row, col),
          static_cast<size_t>(PQgetlength(res_.get(), row, col))};
}

int64_t result::i64(int row, int col) const {
  auto s = text(row, col);
  int64_t n = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (ec != std::errc{} || ptr != s.data() + s.size())
    throw error("reading result",
                "column " + std::string{PQfname(res_.get(), col)}
                  + " is not an integer: '" + std::string{s} + "'");
  return n;
}

double result::f64(int row, int col) const {
  std::string s{text(row, col)};
  char* end = nullptr;
  double x = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size())
    throw error("reading result",
                "column " + std::string{PQfname(res_.get(), col)}
                  + " is not a number: '" + s + "'");
  return x;
}

bool result::boolean(int row, int col) const {
  return text(row, col) == "t";
}

std::optional<std::string> result::opt_str(int row, int col) const {
  if (is_null(row, col))
    return std::nullopt;
  return str(row, col);
}

std::optional<int64_t> result::opt_i64(int row, int col) const {
  if (is_null(row, col))
    return std::nullopt;
  return i64(row, col);
}

std::optional<double> result::opt_f64(int row, int col) const {
  if (is_null(row, col))
    return std::nullopt;
  return f64(row, col);
}

// -- connection ------------------------------------------------------------------

connection::connection(std::string url, std::chrono::seconds connect_timeout)
  : url_(std::move(url)) {
  opts_.connect_timeout = connect_timeout;
  connect();
}

connection::connection(std::string url, connection_options options)
  : url_(std::move(url)), opts_(options) {
  connect();
}

connection::~connection() {
  if (conn_)
    PQfinish(conn_);
}

connection::connection(connection&& other) noexcept
  : url_(std::move(other.url_)),
    opts_(other.opts_),
    conn_(std::exchange(other.conn_, nullptr)),
    prepared_(std::move(other.prepared_)) {
}

connection& connection::operator=(connection&& other) noexcept {
  if (this != &other) {
    if (conn_)
      PQfinish(conn_);
    url_ = std::move(other.url_);
    opts_ = other.opts_;
    conn_ = std::exchange(other.conn_, nullptr);
    prepared_ = std::move(other.prepared_);
  }
  return *this;
}

void connection::connect() {
  // Settings go as separate keywords so URLs, keyword strings and PG*
  // environment variables all keep working. Keywords are processed in order
  // and the last value wins: ours come before "dbname", whose expansion (the
  // user's connection string) may override them.
  std::vector<std::pair<const char*, std::string>> kv;
  kv.emplace_back("connect_timeout", std::to_string(opts_.connect_timeout.count()));
  std::string options;
  if (opts_.statement_timeout.count() > 0)
    options += "-c statement_timeout=" + std::to_string(opts_.statement_timeout.count());
  if (opts_.lock_timeout.count() > 0)
    options += (options.empty() ? "" : " ") + std::string{"-c lock_timeout="}
               + std::to_string(opts_.lock_timeout.count());
  if (!options.empty())
    kv.emplace_back("options", options);
  if (opts_.keepalives_idle_s > 0 || opts_.keepalives_interval_s > 0
      || opts_.keepalives_count > 0)
    kv.emplace_back("keepalives", "1");
  if (opts_.keepalives_idle_s > 0)
    kv.emplace_back("keepalives_idle", std::to_string(opts_.keepalives_idle_s));
  if (opts_.keepalives_interval_s > 0)
    kv.emplace_back("keepalives_interval", std::to_string(opts_.keepalives_interval_s));
  if (opts_.keepalives_count > 0)
    kv.emplace_back("keepalives_count", std::to_string(opts_.keepalives_count));
  if (opts_.tcp_user_timeout.count() > 0)
    kv.emplace_back("tcp_user_timeout", std::to_string(opts_.tcp_user_timeout.count()));
  kv.emplace_back("dbname", url_);
  kv.emplace_back("application_name", "spool");
  std::vector<const char*> keys, vals;
  for (auto& [k, v] : kv) {
    keys.push_back(k);
    vals.push_back(v.c_str());
  }
  keys.push_back(nullptr);
  vals.push_back(nullptr);
  if (conn_)
    PQfinish(conn_);
  prepared_.clear();
  conn_ = PQconnectdbParams(keys.data(), vals.data(), /*expand_dbname=*/1);
  if (conn_ == nullptr)
    throw error("connecting to " + redact_url(url_), "out of memory", {}, true);
  if (PQstatus(conn_) != CONNECTION_OK) {
    std::string msg = PQerrorMessage(conn_);
    PQfinish(conn_);
    conn_ = nullptr;
    // libpq's message may span lines ("connection to server ... failed: ...").
    for (auto& c : msg)
      if (c == '\n')
        c = ' ';
    throw error("cannot connect to " + redact_url(url_), msg, {}, true);
  }
  // Notices (e.g. "relation already exists, skipping") are not errors.
  PQsetNoticeProcessor(conn_, [](void*, const char*) {}, nullptr);
  if (opts_.call_timeout.count() > 0)
    PQsetnonblocking(conn_, 1);
}

void connection::reconnect() {
  connect();
}

bool connection::ok() const noexcept {
  return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK;
}

int connection::socket() const noexcept {
  return conn_ ? PQsocket(conn_) : -1;
}

bool connection::healthy() {
  if (!ok())
    return false;
  if (PQtransactionStatus(conn_) != PQTRANS_IDLE)
    return false;
  pollfd pfd{PQsocket(conn_), POLLIN, 0};
  if (::poll(&pfd, 1, 0) == 0)
    return true;
  // An idle connection that is not listening receives nothing but the
  // server's goodbye (admin shutdown, then EOF): anything else is suspect.
  if (PQconsumeInput(conn_) == 0)
    return false;
  if (PGnotify* n = PQnotifies(conn_)) {
    PQfreemem(n);
    return PQstatus(conn_) == CONNECTION_OK;
  }
  return false;
}

namespace {

/// The first line of `s`, trimmed.
std::string first_line(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\n'))
    s.remove_prefix(1);
  s = s.substr(0, s.find('\n'));
  while (!s.empty() && (s.back() == ' ' || s.back() == '\r'))
    s.remove_suffix(1);
  return std::string{s};
}

} // namespace

void connection::raise(pg_result* res, std::string_view context) {
  // One line: the server's primary message (and the first line of its
  // detail), never the CONTEXT (for a PL/pgSQL function: its statements).
  std::string sqlstate;
  std::string msg;
  if (res) {
    if (auto s = PQresultErrorField(res, PG_DIAG_SQLSTATE))
      sqlstate = s;
    if (auto primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)) {
      msg = first_line(primary);
      if (auto detail = PQresultErrorField(res, PG_DIAG_MESSAGE_DETAIL))
        msg += " (" + first_line(detail) + ")";
    } else {
      msg = first_line(PQresultErrorMessage(res));
    }
    PQclear(res);
  }
  if (msg.empty() && conn_)
    msg = first_line(PQerrorMessage(conn_));
  bool lost = conn_ == nullptr || PQstatus(conn_) != CONNECTION_OK;
  if (msg.empty())
    msg = "unknown error";
  if (msg.rfind("ERROR:  ", 0) == 0)
    msg.erase(0, 8);
  throw error(std::string{context}, msg, sqlstate, lost);
}

void connection::abandon(std::string_view context) {
  PQfinish(conn_);
  conn_ = nullptr;
  prepared_.clear();
  char secs[32];
  std::snprintf(secs, sizeof secs, "%.3g", opts_.call_timeout.count() / 1000.0);
  throw error(std::string{context},
              std::string{"no answer from the database within "} + secs
                + " s; connection closed",
              {}, true);
}

pg_result* connection::await_result(std::string_view context) {
  using clock = std::chrono::steady_clock;
  auto deadline = clock::now() + opts_.call_timeout;
  // Waits for the socket; false once the deadline passed.
  auto wait = [&](short events) {
    for (;;) {
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
      if (left.count() <= 0)
        return false;
      pollfd pfd{PQsocket(conn_), events, 0};
      int n = ::poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left.count() + 1, 1 << 30)));
      if (n > 0)
        return true;
      if (n < 0 && errno != EINTR)
        return true; // let libpq report the socket's error
    }
  };
  for (;;) {
    int f = PQflush(conn_);
    if (f == 0)
      break;
    if (f < 0)
      raise(nullptr, context);
    if (!wait(POLLIN | POLLOUT))
      abandon(context);
    if (PQconsumeInput(conn_) == 0)
      raise(nullptr, context);
  }
  pg_result* kept = nullptr; // the first error, else the last result
  for (;;) {
    while (PQisBusy(conn_)) {
      if (!wait(POLLIN)) {
        if (kept)
          PQclear(kept);
        abandon(context);
      }
      if (PQconsumeInput(conn_) == 0) {
        if (kept)
          PQclear(kept);
        raise(nullptr, context);
      }
    }
    pg_result* r = PQgetResult(conn_);
    if (r == nullptr)
      break;
    auto st = PQresultStatus(r);
    bool failed = st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK;
    if (kept == nullptr || (failed && (PQresultStatus(kept) == PGRES_COMMAND_OK
                                       || PQresultStatus(kept) == PGRES_TUPLES_OK))) {
      if (kept)
        PQclear(kept);
      kept = r;
    } else if (!failed && (PQresultStatus(kept) == PGRES_COMMAND_OK
                           || PQresultStatus(kept) == PGRES_TUPLES_OK)) {
      PQclear(kept);
      kept = r;
    } else {
      PQclear(r);
    }
  }
  return kept;
}

namespace {

struct param_arrays {
  std::vector<const char*> values;
  explicit param_arrays(const params& ps) {
    values.reserve(ps.size());
    for (auto& p : ps)
      values.push_back(p ? p->c_str() : nullptr);
  }
};

bool succeeded(pg_result* res) {
  auto st = PQresultStatus(res);
  return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
}

} // namespace

result connection::exec(std::string_view sql, const params& ps,
                        std::string_view context) {
  if (!conn_)
    throw error(std::string{context}, "not connected", {}, true);
  std::string text{sql};
  param_arrays pa{ps};
  pg_result* res = nullptr;
  if (opts_.call_timeout.count() > 0) {
    if (!PQsendQueryParams(conn_, text.c_str(), static_cast<int>(ps.size()), nullptr,
                           pa.values.data(), nullptr, nullptr, 0))
      raise(nullptr, context);
    res = await_result(context);
  } else {
    res = PQexecParams(conn_, text.c_str(), static_cast<int>(ps.size()), nullptr,
                       pa.values.data(), nullptr, nullptr, 0);
  }
  if (res == nullptr || !succeeded(res))
    raise(res, context);
  return result{res};
}

result connection::exec_prepared(std::string_view sql, const params& ps,
                                 std::string_view context) {
  if (!conn_)
    throw error(std::string{context}, "not connected", {}, true);
  std::string text{sql};
  auto i = prepared_.find(text);
  if (i == prepared_.end()) {
    auto name = "spool_" + std::to_string(prepared_.size());
    pg_result* res = nullptr;
    if (opts_.call_timeout.count() > 0) {
      if (!PQsendPrepare(conn_, name.c_str(), text.c_str(), static_cast<int>(ps.size()),
                         nullptr))
        raise(nullptr, context);
      res = await_result(context);
    } else {
      res = PQprepare(conn_, name.c_str(), text.c_str(), static_cast<int>(ps.size()),
                      nullptr);
    }
    if (res == nullptr || !succeeded(res))
      raise(res, context);
    PQclear(res);
    i = prepared_.emplace(std::move(text), std::move(name)).first;
  }
  param_arrays pa{ps};
  pg_result* res = nullptr;
  if (opts_.call_timeout.count() > 0) {
    if (!PQsendQueryPrepared(conn_, i->second.c_str(), static_cast<int>(ps.size()),
                             pa.values.data(), nullptr, nullptr, 0))
      raise(nullptr, context);
    res = await_result(context);
  } else {
    res = PQexecPrepared(conn_, i->second.c_str(), static_cast<int>(ps.size()),
                         pa.values.data(), nullptr, nullptr, 0);
  }
  if (res == nullptr || !succeeded(res))
    raise(res, context);
  return result{res};
}

void connection::exec_script(std::string_view sql, std::string_view context) {
  if (!conn_)
    throw error(std::string{context}, "not connected", {}, true);
  std::string text{sql};
  auto res = PQexec(conn_, text.c_str());
  if (res == nullptr || !succeeded(res))
    raise(res, context);
  PQclear(res);
  // A multi-statement script may leave further results queued.
  while (auto more = PQgetResult(conn_)) {
    if (!succeeded(more))
      raise(more, context);
    PQclear(more);
  }
}

void connection::listen(std::string_view channel) {
  exec("LISTEN " + quote_ident(channel), {}, "subscribing to notifications");
}

std::vector<connection::notification> connection::drain_notifications() {
  std::vector<notification> out;
  if (!conn_)
    return out;
  if (PQconsumeInput(conn_) == 0)
    throw error("reading notifications", PQerrorMessage(conn_), {}, true);
  while (PGnotify* n = PQnotifies(conn_)) {
    out.push_back({n->relname, n->extra ? n->extra : ""});
    PQfreemem(n);
  }
  return out;
}

bool connection::wait_readable(std::chrono::milliseconds timeout) {
  if (!conn_)
    return false;
  pollfd pfd{PQsocket(conn_), POLLIN, 0};
  return ::poll(&pfd, 1, static_cast<int>(timeout.count())) > 0;
}

} // namespace spool::pg
