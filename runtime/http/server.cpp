#include "runtime/http/server.hpp"

#include "runtime/utf8.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/file_body.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cctype>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <thread>
#include <unistd.h>

namespace spool::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

// -- request and response --------------------------------------------------------

namespace {

bool iequals(std::string_view a, std::string_view b) {
  return a.size() == b.size()
         && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
              return std::tolower(static_cast<unsigned char>(x))
                     == std::tolower(static_cast<unsigned char>(y));
            });
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_value(s[i + 1]) >= 0 && hex_value(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_value(s[i + 1]) * 16 + hex_value(s[i + 2]));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

} // namespace

std::string_view request::header(std::string_view name) const {
  for (const auto& [k, v] : headers)
    if (iequals(k, name))
      return v;
  return {};
}

std::string_view request::param(std::string_view name) const {
  for (const auto& [k, v] : params)
    if (k == name)
      return v;
  return {};
}

std::string request::query_param(std::string_view name) const {
  std::string_view q = query;
  while (!q.empty()) {
    auto amp = q.find('&');
    auto pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    auto eq = pair.find('=');
    auto key = percent_decode(pair.substr(0, eq));
    if (key == name)
      return eq == std::string_view::npos ? std::string{} : percent_decode(pair.substr(eq + 1));
  }
  return {};
}

response response::text(int status, std::string body) {
  response r;
  r.status = status;
  r.body = std::move(body);
  return r;
}

response response::json(int status, std::string body) {
  response r;
  r.status = status;
  r.content_type = "application/json";
  r.body = std::move(body);
  return r;
}

std::string parse_endpoint(std::string_view text, endpoint& out) {
  std::string_view host;
  std::string_view port;
  if (!text.empty() && text.front() == '[') {
    auto close = text.find(']');
    if (close == std::string_view::npos || close + 1 >= text.size() || text[close + 1] != ':')
      return "expected \"[address]:port\"";
    host = text.substr(1, close - 1);
    port = text.substr(close + 2);
  } else {
    auto colon = text.rfind(':');
    if (colon == std::string_view::npos)
      return "expected \"host:port\"";
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.find(':') != std::string_view::npos)
      return "an IPv6 address needs brackets: \"[address]:port\"";
  }
  if (port.empty() || port.size() > 5
      || !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }))
    return "the port must be a number from 0 to 65535";
  int p = std::stoi(std::string{port});
  if (p > 65535)
    return "the port must be a number from 0 to 65535";
  for (char c : host)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '-' || c == ':'
          || c == '_'))
      return "the host may hold letters, digits, '.', '-', '_' (and ':' in brackets)";
  out.host = host.empty() ? "0.0.0.0" : std::string{host};
  out.port = p;
  return {};
}

// -- router ------------------------------------------------------------------------

namespace {

std::vector<std::string> split_path(std::string_view path) {
  std::vector<std::string> out;
  size_t i = 0;
  while (i <= path.size()) {
    auto slash = path.find('/', i);
    if (slash == std::string_view::npos)
      slash = path.size();
    out.emplace_back(path.substr(i, slash - i));
    i = slash + 1;
  }
  return out;
}

/// Whether `segments` (a route) matches `path`; fills `params`.
bool match(const std::vector<std::string>& segments, const std::vector<std::string>& path,
           std::vector<std::pair<std::string, std::string>>& params) {
  if (segments.size() != path.size())
    return false;
  params.clear();
  for (size_t i = 0; i < segments.size(); ++i) {
    const auto& s = segments[i];
    if (s.size() > 2 && s.front() == '{' && s.back() == '}') {
      if (path[i].empty())
        return false;
      params.emplace_back(s.substr(1, s.size() - 2), path[i]);
    } else if (s != path[i]) {
      return false;
    }
  }
  return true;
}

} // namespace

router& router::on(std::string method, std::string path, handler h) {
  return on_async(std::move(method), std::move(path),
                  [h = std::move(h)](const request& req, responder respond) {
                    respond(h(req));
                  });
}

router& router::on_async(std::string method, std::string path, async_handler h) {
  routes_.push_back({std::move(method), split_path(path), std::move(h)});
  return *this;
}

router& router::otherwise(handler h) {
  otherwise_ = std::move(h);
  return *this;
}

void router::operator()(const request& req, responder respond) const {
  auto path = split_path(req.path);
  std::string allow;
  std::vector<std::pair<std::string, std::string>> params;
  for (const auto& r : routes_) {
    if (!match(r.segments, path, params))
      continue;
    bool head = req.method == "HEAD" && r.method == "GET";
    if (r.method == req.method || head) {
      request with = req;
      with.params = std::move(params);
      if (head) // answered like GET; the server drops the body
        with.method = "GET";
      r.h(with, std::move(respond));
      return;
    }
    if (!allow.empty())
      allow += ", ";
    allow += r.method;
  }
  if (allow.empty()) {
    respond(otherwise_ ? otherwise_(req) : response::text(404, "not found: " + req.path + "\n"));
    return;
  }
  auto res = response::text(405, "method " + req.method + " not allowed on " + req.path
                                   + " (allowed: " + allow + ")\n");
  res.headers.emplace_back("Allow", allow);
  respond(std::move(res));
}

response router::operator()(const request& req) const {
  std::optional<response> out;
  (*this)(req, [&out](response r) { out = std::move(r); });
  if (!out)
    throw std::logic_error("router: " + req.path + " answered asynchronously");
  return std::move(*out);
}

// -- server --------------------------------------------------------------------------

namespace {

struct shared_settings {
  server_options opts;
  async_handler h;
};

class session : public std::enable_shared_from_this<session> {
public:
  session(tcp::socket&& socket, std::shared_ptr<const shared_settings> s)
    : stream_(std::move(socket)), settings_(std::move(s)) {
  }

  void start() {
    asio::dispatch(stream_.get_executor(),
                   [self = shared_from_this()] { self->read(); });
  }

private:
  /// Reads the next request's header; its body follows in on_header.
  void read() {
    header_.emplace();
    header_->header_limit(static_cast<std::uint32_t>(settings_->opts.max_header_bytes));
    header_->body_limit(boost::none); // checked against the route's limit in on_header
    stream_.expires_after(settings_->opts.idle_timeout);
    bhttp::async_read_header(stream_, buffer_, *header_,
                             [self = shared_from_this()](beast::error_code ec, std::size_t) {
                               self->on_header(ec);
                             });
  }

  /// A failed read: answers what deserves an answer, else closes.
  void read_failed(beast::error_code ec, std::size_t limit) {
    if (ec == bhttp::error::body_limit) {
      reply(response::text(413, "request body over " + std::to_string(limit) + " bytes\n"),
            false, 11);
      return;
    }
    if (ec == bhttp::error::header_limit) {
      reply(response::text(431, "request headers over "
                                  + std::to_string(settings_->opts.max_header_bytes)
                                  + " bytes\n"),
            false, 11);
      return;
    }
    if (ec != bhttp::error::end_of_stream && ec != beast::error::timeout
        && ec != asio::error::operation_aborted && ec != asio::error::connection_reset
        && ec != asio::error::eof && ec != bhttp::error::partial_message)
      reply(response::text(400, "bad request: " + ec.message() + "\n"), false, 11);
    else
      close();
  }

  void on_header(beast::error_code ec) {
    if (ec) {
      read_failed(ec, settings_->opts.max_body_bytes);
      return;
    }
    auto& h = header_->get();
    req_ = request{};
    req_.method = std::string{h.method_string()};
    req_.target = std::string{h.target()};
    auto q = req_.target.find('?');
    req_.path = req_.target.substr(0, q);
    if (q != std::string::npos)
      req_.query = req_.target.substr(q + 1);
    for (const auto& f : h)
      req_.headers.emplace_back(std::string{f.name_string()}, std::string{f.value()});
    beast::error_code rec;
    auto ep = stream_.socket().remote_endpoint(rec);
    if (!rec)
      req_.remote = ep.address().to_string();
    keep_alive_ = h.keep_alive();
    version_ = h.version();
    std::optional<std::size_t> streamed;
    if (settings_->opts.streamed_body) {
      std::optional<response> refuse;
      streamed = settings_->opts.streamed_body(req_, refuse);
      if (refuse) {
        reply(std::move(*refuse), false, version_); // the body is never read
        return;
      }
    }
    std::size_t limit = streamed ? *streamed : settings_->opts.max_body_bytes;
    if (auto len = header_->content_length(); len && *len > limit) {
      // Refused before a byte of the body is read (or stored).
      reply(response::text(413, "request body over " + std::to_string(limit) + " bytes\n"),
            false, version_);
      return;
    }
    auto go_on = [self = shared_from_this(), streamed, limit] {
      if (streamed)
        self->read_file_body(limit);
      else
        self->read_string_body(limit);
    };
    if (iequals(req_.header("Expect"), "100-continue")) {
      auto cont = std::make_shared<bhttp::response<bhttp::empty_body>>(bhttp::status::continue_,
                                                                     version_);
      bhttp::async_write(stream_, *cont,
                         [self = shared_from_this(), cont, go_on](beast::error_code e,
                                                                  std::size_t) {
                           if (e)
                             self->close();
                           else
                             go_on();
                         });
      return;
    }
    go_on();
  }

  void read_string_body(std::size_t limit) {
    body_.emplace(std::move(*header_));
    body_->body_limit(limit);
    bhttp::async_read(stream_, buffer_, *body_,
                      [self = shared_from_this(), limit](beast::error_code ec, std::size_t) {
                        if (ec) {
                          self->read_failed(ec, limit);
                          return;
                        }
                        self->req_.body = std::move(self->body_->get().body());
                        self->dispatch({});
                      });
  }

  /// Streams the body into a new file under spool_dir; past `limit` bytes
  /// the file is removed and the answer is 413.
  void read_file_body(std::size_t limit) {
    auto tmpl = settings_->opts.spool_dir + "/upload-XXXXXX";
    int fd = ::mkstemp(tmpl.data());
    if (fd < 0) {
      reply(response::text(503, "cannot store the body now\n"), false, version_);
      return;
    }
    ::close(fd);
    file_.emplace(std::move(*header_));
    file_->body_limit(limit);
    beast::error_code ec;
    file_->get().body().open(tmpl.c_str(), beast::file_mode::write, ec);
    if (ec) {
      std::error_code rm;
      std::filesystem::remove(tmpl, rm);
      reply(response::text(503, "cannot store the body now\n"), false, version_);
      return;
    }
    bhttp::async_read(stream_, buffer_, *file_,
                      [self = shared_from_this(), limit, tmpl](beast::error_code e, std::size_t) {
                        self->file_->get().body().close();
                        if (e) {
                          std::error_code rm;
                          std::filesystem::remove(tmpl, rm); // nothing stays behind
                          self->read_failed(e, limit);
                          return;
                        }
                        self->dispatch(tmpl);
                      });
  }

  /// Hands the request to the handler; `body_file` (a streamed body) is
  /// removed once the answer is written, whatever the handler did with it.
  void dispatch(std::string body_file) {
    req_.body_file = body_file;
    bool head = req_.method == "HEAD";
    // The answer may come from another thread (a long poll): it is written
    // on this connection's strand, once.
    auto answered = std::make_shared<std::atomic<bool>>(false);
    responder respond = [self = shared_from_this(), keep_alive = keep_alive_,
                         version = version_, head, answered,
                         body_file = std::move(body_file)](response res) {
      if (answered->exchange(true))
        return;
      if (!body_file.empty()) {
        std::error_code rm;
        std::filesystem::remove(body_file, rm);
      }
      if (head) {
        res.body.clear();
        res.file.clear();
      }
      asio::dispatch(self->stream_.get_executor(),
                     [self, res = std::move(res), keep_alive, version]() mutable {
                       self->reply(std::move(res), keep_alive, version);
                     });
    };
    try {
      settings_->h(req_, respond);
    } catch (const std::exception& e) {
      spdlog::error("http: {} {} failed: {}", req_.method, req_.path, e.what());
      respond(response::text(500, "internal error\n"));
    }
  }

  template <class Message>
  void write(std::shared_ptr<Message> out, const response& res, bool keep_alive) {
    out->set(bhttp::field::server, settings_->opts.name);
    out->set(bhttp::field::content_type, res.content_type);
    for (auto& [k, v] : res.headers)
      out->set(k, v);
    out->keep_alive(keep_alive);
    out->prepare_payload();
    stream_.expires_after(settings_->opts.idle_timeout);
    bhttp::async_write(stream_, *out,
                       [self = shared_from_this(), out](beast::error_code ec, std::size_t) {
                         if (ec || out->need_eof())
                           self->close();
                         else
                           self->read();
                       });
  }

  void reply(response res, bool keep_alive, unsigned version) {
    if (!res.file.empty()) {
      auto out = std::make_shared<bhttp::response<bhttp::file_body>>(
        static_cast<bhttp::status>(res.status), version);
      beast::error_code ec;
      out->body().open(res.file.c_str(), beast::file_mode::scan, ec);
      if (!ec) {
        write(out, res, keep_alive);
        return;
      }
      res = response::text(404, "not found\n");
    }
    auto out = std::make_shared<bhttp::response<bhttp::string_body>>(
      static_cast<bhttp::status>(res.status), version);
    out->body() = std::move(res.body);
    write(out, res, keep_alive);
  }

  /// Ends the connection: our side first, then what the peer still sends
  /// is read and dropped for up to a second before the socket closes, so
  /// that an answer sent before its request's body ended (a 413) is not
  /// destroyed by a reset.
  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) {
      stream_.close();
      return;
    }
    stream_.expires_after(std::chrono::seconds{1});
    drain();
  }

  void drain() {
    stream_.async_read_some(asio::buffer(scratch_),
                            [self = shared_from_this()](beast::error_code ec, std::size_t) {
                              if (ec)
                                self->stream_.close();
                              else
                                self->drain();
                            });
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::empty_body>> header_;
  std::optional<bhttp::request_parser<bhttp::string_body>> body_;
  std::optional<bhttp::request_parser<bhttp::file_body>> file_;
  std::shared_ptr<const shared_settings> settings_;
  request req_;
  std::array<char, 16384> scratch_{}; // what a closing peer still sends
  bool keep_alive_ = false;
  unsigned version_ = 11;
};

} // namespace

struct server::impl {
  asio::io_context ioc;
  tcp::acceptor acceptor{ioc};
  std::shared_ptr<const shared_settings> settings;
  std::vector<std::thread> threads;
  std::string host;
  int port = 0;
  std::atomic<bool> stopped{false};

  void accept() {
    acceptor.async_accept(asio::make_strand(ioc), [this](beast::error_code ec, tcp::socket s) {
      if (ec == asio::error::operation_aborted || !acceptor.is_open())
        return;
      if (!ec)
        std::make_shared<session>(std::move(s), settings)->start();
      accept();
    });
  }
};

server::server(server_options options, handler h)
  : server(std::move(options), async_handler{[h = std::move(h)](const request& req,
                                                                 responder respond) {
      respond(h(req));
    }}) {
}

server::server(server_options options, const router& routes)
  : server(std::move(options),
           async_handler{[routes](const request& req, responder respond) {
             routes(req, std::move(respond));
           }}) {
}

server::server(server_options options, async_handler h) : impl_(std::make_unique<impl>()) {
  auto& m = *impl_;
  auto where = options.listen.host + ":" + std::to_string(options.listen.port);
  beast::error_code ec;
  tcp::resolver resolver{m.ioc};
  auto results = resolver.resolve(options.listen.host, std::to_string(options.listen.port),
                                  tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || results.empty())
    throw std::runtime_error("cannot listen on " + where + ": "
                             + (ec ? ec.message() : std::string{"no such address"}));
  auto ep = results.begin()->endpoint();
  m.acceptor.open(ep.protocol(), ec);
  if (!ec)
    m.acceptor.set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec)
    m.acceptor.bind(ep, ec);
  if (!ec)
    m.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec)
    throw std::runtime_error("cannot listen on " + where + ": " + ec.message());
  auto bound = m.acceptor.local_endpoint();
  m.host = bound.address().to_string();
  m.port = bound.port();
  int threads = std::max(1, options.threads);
  m.settings = std::make_shared<const shared_settings>(
    shared_settings{std::move(options), std::move(h)});
  m.accept();
  for (int i = 0; i < threads; ++i)
    m.threads.emplace_back([&m] { m.ioc.run(); });
}

server::~server() {
  stop();
}

std::string server::address() const {
  auto h = impl_->host;
  if (h.find(':') != std::string::npos)
    h = "[" + h + "]";
  return h + ":" + std::to_string(impl_->port);
}

int server::port() const noexcept {
  return impl_->port;
}

void server::stop() {
  if (impl_->stopped.exchange(true))
    return;
  asio::post(impl_->ioc, [m = impl_.get()] {
    beast::error_code ec;
    m->acceptor.close(ec);
  });
  impl_->ioc.stop();
  for (auto& t : impl_->threads)
    t.join();
  impl_->threads.clear();
}

} // namespace spool::http
