#include "runtime/http/server.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <optional>
#include <stdexcept>
#include <thread>

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

int hex_digit(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

std::string percent_decode(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%' && i + 2 < s.size() && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
      out += static_cast<char>(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2]));
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
    respond(response::text(404, "not found: " + req.path + "\n"));
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
  void read() {
    parser_.emplace();
    parser_->header_limit(static_cast<std::uint32_t>(settings_->opts.max_header_bytes));
    parser_->body_limit(settings_->opts.max_body_bytes);
    stream_.expires_after(settings_->opts.idle_timeout);
    bhttp::async_read(stream_, buffer_, *parser_,
                      [self = shared_from_this()](beast::error_code ec, std::size_t) {
                        self->on_read(ec);
                      });
  }

  void on_read(beast::error_code ec) {
    if (ec == bhttp::error::end_of_stream || ec == beast::error::timeout
        || ec == asio::error::operation_aborted) {
      close();
      return;
    }
    if (ec == bhttp::error::body_limit) {
      reply(response::text(413, "request body over "
                                  + std::to_string(settings_->opts.max_body_bytes)
                                  + " bytes\n"),
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
    if (ec) {
      if (ec != asio::error::connection_reset && ec != asio::error::eof)
        reply(response::text(400, "bad request: " + ec.message() + "\n"), false, 11);
      else
        close();
      return;
    }
    auto msg = parser_->release();
    request req;
    req.method = std::string{msg.method_string()};
    req.target = std::string{msg.target()};
    auto q = req.target.find('?');
    req.path = req.target.substr(0, q);
    if (q != std::string::npos)
      req.query = req.target.substr(q + 1);
    for (const auto& f : msg)
      req.headers.emplace_back(std::string{f.name_string()}, std::string{f.value()});
    req.body = std::move(msg.body());
    beast::error_code rec;
    auto ep = stream_.socket().remote_endpoint(rec);
    if (!rec)
      req.remote = ep.address().to_string();
    bool keep_alive = msg.keep_alive();
    unsigned version = msg.version();
    bool head = req.method == "HEAD";
    // The answer may come from another thread (a long poll): it is written
    // on this connection's strand, once.
    auto answered = std::make_shared<std::atomic<bool>>(false);
    responder respond = [self = shared_from_this(), keep_alive, version, head,
                         answered](response res) {
      if (answered->exchange(true))
        return;
      if (head)
        res.body.clear();
      asio::dispatch(self->stream_.get_executor(),
                     [self, res = std::move(res), keep_alive, version]() mutable {
                       self->reply(std::move(res), keep_alive, version);
                     });
    };
    try {
      settings_->h(req, respond);
    } catch (const std::exception& e) {
      spdlog::error("http: {} {} failed: {}", req.method, req.path, e.what());
      respond(response::text(500, "internal error\n"));
    }
  }

  void reply(response res, bool keep_alive, unsigned version) {
    auto out = std::make_shared<bhttp::response<bhttp::string_body>>(
      static_cast<bhttp::status>(res.status), version);
    out->set(bhttp::field::server, settings_->opts.name);
    out->set(bhttp::field::content_type, res.content_type);
    for (auto& [k, v] : res.headers)
      out->set(k, v);
    out->body() = std::move(res.body);
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

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream_.close();
  }

  beast::tcp_stream stream_;
  beast::flat_buffer buffer_;
  std::optional<bhttp::request_parser<bhttp::string_body>> parser_;
  std::shared_ptr<const shared_settings> settings_;
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
