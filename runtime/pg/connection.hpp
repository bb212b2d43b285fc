#pragma once
// A RAII libpq connection. Every value travels as a bound parameter; the only
// unparameterized entry point, exec_script(), is for static SQL (migrations).

#include "runtime/pg/error.hpp"

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

struct pg_conn;
struct pg_result;

namespace spool::pg {

/// One bound parameter in text format; nullopt is SQL NULL.
using param = std::optional<std::string>;
using params = std::vector<param>;

// -- parameter conversion ----------------------------------------------------

inline param to_param(std::nullptr_t) { return std::nullopt; }
inline param to_param(const std::string& x) { return x; }
inline param to_param(std::string_view x) { return std::string{x}; }
inline param to_param(const char* x) { return std::string{x}; }
inline param to_param(bool x) { return std::string{x ? "t" : "f"}; }
inline param to_param(const param& x) { return x; }
param to_param(double x);
template <class T>
  requires std::is_integral_v<T>
param to_param(T x) {
  return std::to_string(x);
}
template <class T>
param to_param(const std::optional<T>& x) {
  return x ? to_param(*x) : std::nullopt;
}

/// A PostgreSQL array literal ("{1,2,3}") for binding as one parameter.
std::string array_literal(const std::vector<int64_t>& xs);
std::string array_literal(const std::vector<std::string>& xs);
std::string array_literal(const std::vector<double>& xs);
std::string array_literal(const std::vector<std::optional<std::string>>& xs);

// -- results -----------------------------------------------------------------

/// The rows of one statement. Values are read as text and converted.
class result {
public:
  result() = default;
  explicit result(pg_result* res);

  int rows() const noexcept;
  int columns() const noexcept;
  /// Number of rows an INSERT/UPDATE/DELETE touched.
  int64_t affected() const;
  int column(std::string_view name) const; // throws if absent
  std::string_view column_name(int col) const;
  /// The column's PostgreSQL type OID (20 int8, 16 bool, 3802 jsonb, ...).
  unsigned type_oid(int col) const;

  bool is_null(int row, int col) const;
  std::string_view text(int row, int col) const;
  std::string str(int row, int col) const { return std::string{text(row, col)}; }
  int64_t i64(int row, int col) const;
  double f64(int row, int col) const;
  bool boolean(int row, int col) const;
  std::optional<std::string> opt_str(int row, int col) const;
  std::optional<int64_t> opt_i64(int row, int col) const;
  std::optional<double> opt_f64(int row, int col) const;

  std::string_view text(int row, std::string_view col) const {
    return text(row, column(col));
  }

private:
  std::shared_ptr<pg_result> res_;
};

// -- connection ----------------------------------------------------------------

/// How a connection guards against a slow, hung or vanished server. Zero
/// leaves a setting at the libpq or server default. A connection string's
/// own settings win over these.
struct connection_options {
  /// Time to establish a connection. Defaults to 10 s.
  std::chrono::seconds connect_timeout{10};
  /// Server-side limits of the session (statement_timeout, lock_timeout).
  std::chrono::milliseconds statement_timeout{0};
  std::chrono::milliseconds lock_timeout{0};
  /// TCP keepalives: idle time before the first probe, between probes, and
  /// probes lost before the connection counts as dead.
  int keepalives_idle_s = 0;
  int keepalives_interval_s = 0;
  int keepalives_count = 0;
  /// How long sent data may stay unacknowledged before the connection is
  /// dropped (TCP_USER_TIMEOUT).
  std::chrono::milliseconds tcp_user_timeout{0};
  /// Client-side deadline of one call, for a server that accepts bytes but
  /// never answers (a paused server): past it the connection is closed and
  /// the call fails with connection_lost(). Whether the statement ran is
  /// then unknown. Zero: no deadline.
  std::chrono::milliseconds call_timeout{0};
};

class connection {
public:
  /// Connects; throws pg::error (naming the redacted URL) when that fails.
  explicit connection(std::string url,
                      std::chrono::seconds connect_timeout = std::chrono::seconds{10});
  connection(std::string url, connection_options options);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;
  connection(connection&&) noexcept;
  connection& operator=(connection&&) noexcept;

  /// Runs one parameterized statement and returns its rows.
  result exec(std::string_view sql, const params& ps = {},
              std::string_view context = {});

  template <class... Ts>
  result query(std::string_view sql, const Ts&... xs) {
    return exec(sql, params{to_param(xs)...});
  }

  /// Like exec(), but prepares the statement once per connection and reuses it.
  result exec_prepared(std::string_view sql, const params& ps = {},
                       std::string_view context = {});

  /// Runs a script of static SQL statements (no values): migrations only.
  void exec_script(std::string_view sql, std::string_view context = {});

  /// False once the connection broke; reconnect() makes a new one.
  bool ok() const noexcept;
  /// Cheap liveness check without a round trip: reads whatever the server
  /// sent while idle (an admin shutdown, EOF) and reports the state.
  bool healthy();
  void reconnect();

  const std::string& url() const noexcept { return url_; }
  /// Changes the client-side deadline of later calls (0: none).
  void set_call_timeout(std::chrono::milliseconds t) noexcept { opts_.call_timeout = t; }
  int socket() const noexcept;
  pg_conn* native() const noexcept { return conn_; }

  // -- LISTEN/NOTIFY --
  void listen(std::string_view channel);
  struct notification {
    std::string channel;
    std::string payload;
  };
  /// Reads available input; returns the notifications received so far.
  std::vector<notification> drain_notifications();
  /// Blocks up to `timeout` for input on the socket; true if some arrived.
  bool wait_readable(std::chrono::milliseconds timeout);

private:
  void connect();
  [[noreturn]] void raise(pg_result* res, std::string_view context);
  /// After a successful PQsend*: the call's result within call_timeout.
  pg_result* await_result(std::string_view context);
  /// Closes the connection after a missed deadline and throws.
  [[noreturn]] void abandon(std::string_view context);

  std::string url_;
  connection_options opts_;
  pg_conn* conn_ = nullptr;
  std::unordered_map<std::string, std::string> prepared_;
};

/// Runs `fn(conn)` inside BEGIN/COMMIT, rolling back on any exception.
template <class F>
auto transaction(connection& conn, F&& fn) {
  conn.exec("BEGIN");
  try {
    if constexpr (std::is_void_v<decltype(fn(conn))>) {
      fn(conn);
      conn.exec("COMMIT");
    } else {
      auto out = fn(conn);
      conn.exec("COMMIT");
      return out;
    }
  } catch (...) {
    if (conn.ok()) {
      try {
        conn.exec("ROLLBACK");
      } catch (...) {
      }
    }
    throw;
  }
}

/// Quotes an identifier (database name) for the few statements that cannot
/// take parameters, such as CREATE DATABASE.
std::string quote_ident(std::string_view name);

} // namespace spool::pg
