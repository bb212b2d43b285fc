#pragma once
// A small HTTP/1.1 server on its own threads (Boost.Beast over Asio), never
// on an actor scheduler's. Requests are read whole (bounded header and body),
// handed to one handler, and answered; connections are kept alive as the
// client asks and closed after an idle timeout. The handler runs on a server
// thread and may block it (a health check waiting on the database): the
// server has a few threads so one slow request does not hold the others.
//
// No Beast or Asio in this header: they are compiled into server.cpp alone.

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace spool::http {

struct request {
  std::string method; // "GET", "POST", ...
  std::string target; // path and query as sent
  std::string path;   // target up to '?'
  std::string query;  // after '?', undecoded; empty when none
  /// Headers in arrival order; names as sent.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  /// The peer's address ("127.0.0.1", "::1").
  std::string remote;
  /// A streamed body (server_options::streamed_body): the file it was
  /// written to, which the server removes once the answer is written (move
  /// it elsewhere to keep it); `body` is empty then. Empty otherwise.
  std::string body_file;
  /// Path parameters a router matched ({"id", "42"}).
  std::vector<std::pair<std::string, std::string>> params;

  /// The path parameter `name`; empty when absent.
  std::string_view param(std::string_view name) const;

  /// The first header named `name` (case-insensitive); empty when absent.
  std::string_view header(std::string_view name) const;
  /// The value of query parameter `name` (percent-decoded, '+' as space);
  /// empty when absent.
  std::string query_param(std::string_view name) const;
};

struct response {
  int status = 200;
  std::string content_type = "text/plain; charset=utf-8";
  std::string body;
  /// Sent instead of `body` when set: a whole file, streamed from disk (404
  /// when it cannot be opened).
  std::string file;
  std::vector<std::pair<std::string, std::string>> headers;

  static response text(int status, std::string body);
  static response json(int status, std::string body);
};

using handler = std::function<response(const request&)>;

/// Delivers the answer of an asynchronous handler; call it exactly once,
/// from any thread (a long poll answers when its state changes).
using responder = std::function<void(response)>;
/// A handler that may answer later: it gets the request and a responder.
using async_handler = std::function<void(const request&, responder)>;

/// Where to listen: host and port. `host` is an IP address or a name
/// ("localhost"); port 0 asks the system for a free one.
struct endpoint {
  std::string host;
  int port = 0;
};

/// Parses "host:port", "[v6]:port" or ":port" (all addresses). Returns an
/// empty string on success, else what is wrong with `text`.
std::string parse_endpoint(std::string_view text, endpoint& out);

struct server_options {
  endpoint listen;
  int threads = 2;
  std::size_t max_header_bytes = 16 * 1024;
  std::size_t max_body_bytes = 1024 * 1024;
  /// A connection with no complete request within this time is closed.
  std::chrono::seconds idle_timeout{30};
  /// Requests whose body streams to a file instead of memory (uploads):
  /// given the request without its body, the most bytes its body may have,
  /// or nullopt for an ordinary request. A larger body is refused with 413
  /// and nothing of it stays on disk. It may also set `refuse` to answer at
  /// once, before any of the body is read (an upload without a valid token).
  std::function<std::optional<std::size_t>(const request&, std::optional<response>& refuse)>
    streamed_body;
  /// Where streamed bodies are written (the same file system as where the
  /// handler moves them, so the move is a rename).
  std::string spool_dir = "/tmp";
  /// Sent as the Server header.
  std::string name = "spool";
};

class router;

class server {
public:
  /// Binds and starts serving. Throws std::runtime_error naming the address
  /// and the reason when it cannot listen (address in use, no such host).
  server(server_options options, handler h);
  server(server_options options, async_handler h);
  server(server_options options, const router& routes);
  ~server(); // stops
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// The bound address, "host:port" (the real port when 0 was asked for).
  std::string address() const;
  int port() const noexcept;

  /// Stops accepting, closes connections and joins the threads. Idempotent.
  void stop();

private:
  struct impl;
  std::unique_ptr<impl> impl_;
};

/// Answers requests by exact path; 404 for unknown paths, 405 (with Allow)
/// for a known path asked with another method. HEAD is answered like GET
/// without a body.
///
/// A path may hold parameters: "/api/v2/jobs/{id}/approve" matches
/// "/api/v2/jobs/42/approve" with request::params {"id": "42"} (a parameter
/// is one non-empty segment).
class router {
public:
  router& on(std::string method, std::string path, handler h);
  router& on_async(std::string method, std::string path, async_handler h);
  /// Answers paths no route knows (default: a plain 404).
  router& otherwise(handler h);
  void operator()(const request& req, responder respond) const;
  /// For synchronous use (every route synchronous); throws std::logic_error
  /// when the route answers asynchronously.
  response operator()(const request& req) const;

private:
  struct route {
    std::string method;
    std::vector<std::string> segments; // "{name}" for a parameter
    async_handler h;
  };
  std::vector<route> routes_;
  handler otherwise_;
};

} // namespace spool::http
