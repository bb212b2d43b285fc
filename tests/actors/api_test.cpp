// The client API against a real `spool serve`, a real worker and a real
// database: tokens and who sees what, enqueue with idempotency keys,
// validation errors naming the field, pagination, ETag and a long poll woken
// by an approval, the approval gate through the API, rate limits, revoked
// tokens, and the open mode on loopback.

#include "tests/support/serve.hpp"
#include "tests/support/tools.hpp"
#include "tests/support/worker_fixture.hpp"

#include <boost/json.hpp>

#include <csignal>
#include <filesystem>
#include <stdlib.h>
#include <future>
#include <set>

using namespace spool;
using namespace spool::test;
namespace json = boost::json;

namespace {

/// storyboard -> video (behind the approval gate).
std::string api_config(double requests_per_s = 1000, double burst = 1000,
                       const std::string& data_dir = "/tmp/spool-api-test-data") {
  return temp_file(R"({"data_dir": ")" + data_dir + R"(",
    "worker": {"idle_poll_s": 0.2, "heartbeat_interval_s": 0.5,
    "rescue_interval_s": 0.5, "shutdown_grace_s": 5, "lease_s": 3},
    "api": {"requests_per_s": )" + std::to_string(requests_per_s)
                   + R"(, "burst": )" + std::to_string(burst) + R"(},
    "stages": [
      {"name": "storyboard", "executor": {"latency": {"dist": "fixed", "ms": 5}}},
      {"name": "video", "after": ["storyboard"], "approval": true,
       "executor": {"latency": {"dist": "fixed", "ms": 5}}}]})");
}

using server = serve_process;

struct reply {
  int status = 0;
  json::value body;
  std::string headers;
  std::string raw;

  std::string header(const std::string& name) const {
    auto lower = [](std::string s) {
      for (auto& c : s)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
      return s;
    };
    auto h = lower(headers);
    auto at = h.find("\r\n" + lower(name) + ":");
    if (at == std::string::npos)
      return {};
    auto start = at + name.size() + 3;
    auto end = headers.find("\r\n", start);
    auto v = headers.substr(start, end - start);
    return v.substr(v.find_first_not_of(' '));
  }
  std::string error_field() const {
    return std::string{body.at("error").as_object().if_contains("field")
                         ? body.at("error").at("field").as_string()
                         : ""};
  }
};

/// One request with a token ("" for none) and extra headers.
reply call(int port, const std::string& method, const std::string& path,
           const std::string& token, const std::string& body = {},
           const std::vector<std::string>& headers = {}, double timeout_s = 10,
           bool chunked = false) {
  auto all = headers;
  if (!token.empty())
    all.push_back("Authorization: Bearer " + token);
  auto r = http_request(port, method, path, timeout_s, body, all, chunked);
  reply out;
  out.status = r.status;
  out.headers = "\r\n" + r.headers;
  out.raw = r.body;
  json::error_code ec;
  if (!r.body.empty())
    out.body = json::parse(r.body, ec);
  return out;
}

std::string make_token(const std::map<std::string, std::string>& env,
                       const std::vector<std::string>& args) {
  std::vector<std::string> a{"token", "create"};
  a.insert(a.end(), args.begin(), args.end());
  auto r = run_spool(a, env);
  INFO(r.err);
  REQUIRE(r.exit_code == 0);
  auto t = r.out.substr(0, r.out.find('\n'));
  REQUIRE(t.starts_with("spool_"));
  return t;
}

} // namespace

TEST_CASE_METHOD(worker_fixture,
                 "the client API: tokens, who sees what, enqueue, errors, pagination, ETag, a "
                 "long poll woken by an approval, revocation",
                 "[db][api]") {
  auto cfg = api_config();
  auto acme = make_token(env, {"--client", "acme", "--name", "acme's app"});
  auto globex = make_token(env, {"--client", "globex"});
  auto admin = make_token(env, {"--admin"});
  auto listed = run_spool({"token", "list", "--json"}, env);
  REQUIRE(listed.exit_code == 0);
  CHECK(listed.out.find(acme) == std::string::npos); // never the secret
  CHECK(scalar("SELECT count(*) FROM spool_api_tokens WHERE hash = sha256(convert_to('" + acme
               + "', 'UTF8'))")
        == 1);
  server s{cfg, env};

  // No token, a made-up one.
  CHECK(call(s.port, "GET", "/api/v2/jobs", "").status == 401);
  CHECK(call(s.port, "GET", "/api/v2/jobs", "spool_" + std::string(40, '0')).status == 401);

  // Enqueue: one job; the same Idempotency-Key again gives the same job; the
  // same key from another client is that client's own.
  auto one = call(s.port, "POST", "/api/v2/jobs", acme,
                  R"({"channel_id": "UCacme", "payload": {"title": "t", "duration_s": 10}})",
                  {"Idempotency-Key: order-1"});
  REQUIRE(one.status == 201);
  auto id = one.body.at("id").as_int64();
  CHECK(one.body.at("created").as_bool());
  auto again = call(s.port, "POST", "/api/v2/jobs", acme, R"({"channel_id": "UCacme"})",
                    {"Idempotency-Key: order-1"});
  CHECK(again.status == 200);
  CHECK(again.body.at("id").as_int64() == id);
  CHECK_FALSE(again.body.at("created").as_bool());
  auto theirs = call(s.port, "POST", "/api/v2/jobs", globex, R"({"channel_id": "UCglobex"})",
                     {"Idempotency-Key: order-1"});
  CHECK(theirs.status == 201);
  CHECK(theirs.body.at("id").as_int64() != id);
  CHECK(text("SELECT client_id FROM tasks WHERE id = " + std::to_string(id)) == "acme");
  // A client cannot enqueue for another.
  auto forged = call(s.port, "POST", "/api/v2/jobs", acme,
                     R"({"channel_id": "UCx", "client_id": "globex"})");
  CHECK(forged.status == 403);
  CHECK(forged.error_field() == "client_id");

  // Bad input names the field; nothing of a bad batch is enqueued.
  auto before = scalar("SELECT count(*) FROM tasks");
  auto bad = call(s.port, "POST", "/api/v2/jobs", acme,
                  R"({"jobs": [{"channel_id": "UCok"}, {"channel_id": "UCok", "priority": "urgent"}]})");
  CHECK(bad.status == 400);
  CHECK(bad.error_field() == "jobs[1].priority");
  CHECK(call(s.port, "POST", "/api/v2/jobs", acme, "{not json").status == 400);
  CHECK(call(s.port, "POST", "/api/v2/jobs", acme, R"({"jobs": []})").status == 400);
  CHECK(scalar("SELECT count(*) FROM tasks") == before);

  // Who sees what.
  CHECK(call(s.port, "GET", "/api/v2/jobs/" + std::to_string(id), globex).status == 404);
  CHECK(call(s.port, "POST", "/api/v2/jobs/" + std::to_string(id) + "/cancel", globex).status
        == 404);
  CHECK(call(s.port, "GET", "/api/v2/jobs/" + std::to_string(id), admin).status == 200);
  CHECK(call(s.port, "GET", "/api/v2/jobs?client=acme", globex).status == 403);
  auto view = call(s.port, "GET", "/api/v2/jobs/" + std::to_string(id), acme);
  REQUIRE(view.status == 200);
  CHECK(view.body.at("client_id").as_string() == "acme");
  CHECK(view.body.at("stages").as_array().size() == 2);
  auto etag = view.header("ETag");
  REQUIRE_FALSE(etag.empty());
  CHECK(call(s.port, "GET", "/api/v2/jobs/" + std::to_string(id), acme, {},
             {"If-None-Match: " + etag})
          .status
        == 304);

  // Pagination: 5 more of acme's, 2 a page, newest first, each once.
  auto five = call(s.port, "POST", "/api/v2/jobs", acme,
                   R"([{"channel_id": "a"}, {"channel_id": "b"}, {"channel_id": "c"},
                       {"channel_id": "d"}, {"channel_id": "e"}])");
  REQUIRE(five.status == 201);
  std::set<int64_t> seen;
  std::string after;
  int pages = 0;
  int64_t last = INT64_MAX;
  for (;;) {
    auto page = call(s.port, "GET",
                     "/api/v2/jobs?limit=2" + (after.empty() ? "" : "&after=" + after), acme);
    REQUIRE(page.status == 200);
    ++pages;
    for (auto& j : page.body.at("jobs").as_array()) {
      auto jid = j.at("id").as_int64();
      CHECK(j.at("client_id").as_string() == "acme");
      CHECK(jid < last);
      last = jid;
      CHECK(seen.insert(jid).second);
    }
    if (page.body.at("next").is_null())
      break;
    after = std::string{page.body.at("next").as_string()};
  }
  CHECK(seen.size() == 6);
  CHECK(pages == 3);
  CHECK(call(s.port, "GET", "/api/v2/jobs?state=nonsense", acme).error_field() == "state");
  CHECK(call(s.port, "GET", "/api/v2/jobs?limit=0", acme).error_field() == "limit");

  // The approval gate through the API, with a long poll woken by it.
  spool_process w{{"run", "--config", cfg}, env};
  REQUIRE(wait_for("SELECT count(*) FROM tasks WHERE id = " + std::to_string(id)
                     + " AND state = 'awaiting_approval'",
                   1));
  auto waiting = call(s.port, "GET", "/api/v2/jobs/" + std::to_string(id), acme);
  CHECK(waiting.body.at("state").as_string() == "awaiting_approval");
  CHECK(waiting.body.at("stages").as_array()[1].at("awaits_approval").as_bool());
  auto poll = std::async(std::launch::async, [&] {
    auto t0 = std::chrono::steady_clock::now();
    auto r = call(s.port, "GET", "/api/v2/jobs/" + std::to_string(id) + "?wait=25", acme, {},
                  {"If-None-Match: " + waiting.header("ETag")}, 30);
    return std::pair{r, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                          .count()};
  });
  std::this_thread::sleep_for(std::chrono::milliseconds{500});
  CHECK(call(s.port, "POST", "/api/v2/jobs/" + std::to_string(id) + "/reject", acme, "{}")
          .error_field()
        == "reason");
  CHECK(call(s.port, "POST", "/api/v2/jobs/" + std::to_string(id) + "/approve", acme,
             R"({"note": "ok", "extra": 1})")
          .error_field()
        == "extra");
  auto approved = call(s.port, "POST", "/api/v2/jobs/" + std::to_string(id) + "/approve", acme,
                       R"({"note": "storyboard ok"})");
  REQUIRE(approved.status == 200);
  CHECK(approved.body.at("approved").as_bool());
  CHECK(approved.body.at("review").at("note").as_string() == "storyboard ok");
  auto [woken, seconds] = poll.get();
  CHECK(woken.status == 200);
  CHECK(seconds < 20); // woken by the change, not by the 25 s deadline
  CHECK(woken.header("ETag") != waiting.header("ETag"));
  REQUIRE(wait_for("SELECT count(*) FROM tasks WHERE id = " + std::to_string(id)
                     + " AND state = 'completed'",
                   1));
  CHECK(call(s.port, "POST", "/api/v2/jobs/" + std::to_string(id) + "/cancel", acme).status
        == 409);
  CHECK(call(s.port, "PATCH", "/api/v2/jobs/" + std::to_string(id), acme,
             R"({"priority": "urgent"})")
          .error_field()
        == "priority");
  // A rejected job ends cancelled with the reason.
  auto other = call(s.port, "POST", "/api/v2/jobs", acme, R"({"channel_id": "UCz"})");
  auto other_id = std::to_string(other.body.at("id").as_int64());
  REQUIRE(wait_for("SELECT count(*) FROM tasks WHERE id = " + other_id
                     + " AND state = 'awaiting_approval'",
                   1));
  auto rejected = call(s.port, "POST", "/api/v2/jobs/" + other_id + "/reject", acme,
                       R"({"reason": "off brand"})");
  CHECK(rejected.status == 200);
  CHECK(rejected.body.at("state").as_string() == "cancelled");
  CHECK(rejected.body.at("error").as_string() == "rejected: off brand");

  // A revoked token stops working within its cache time.
  auto id_of_globex = text("SELECT id::text FROM spool_api_tokens WHERE client_id = 'globex'");
  REQUIRE(run_spool({"token", "revoke", id_of_globex}, env).exit_code == 0);
  CHECK(eventually([&] { return call(s.port, "GET", "/api/v2/jobs", globex).status == 401; },
                   20, std::chrono::milliseconds{500}));
  CHECK(call(s.port, "GET", "/api/v2/jobs", acme).status == 200);
  w.signal(SIGTERM);
  CHECK(w.wait(30) == 0);
}

TEST_CASE_METHOD(worker_fixture, "the client API limits each token's request rate",
                 "[db][api]") {
  // 0.1 a second: however slow the machine, 12 requests get at most one
  // token back beyond the burst of 5.
  auto cfg = api_config(0.1, 5);
  auto token = make_token(env, {"--client", "acme"});
  server s{cfg, env};
  int ok = 0, limited = 0;
  std::string retry_after;
  for (int i = 0; i < 12; ++i) {
    auto r = call(s.port, "GET", "/api/v2/jobs", token);
    if (r.status == 200)
      ++ok;
    if (r.status == 429) {
      ++limited;
      retry_after = r.header("Retry-After");
      CHECK(r.body.at("error").at("code").as_string() == "rate_limited");
    }
  }
  CHECK(ok >= 5);
  CHECK(ok <= 6); // the burst, and what refilled meanwhile
  CHECK(limited == 12 - ok);
  CHECK_FALSE(retry_after.empty());
}

TEST_CASE_METHOD(worker_fixture,
                 "without any token the API is open on loopback only, and closes once a token "
                 "exists",
                 "[db][api]") {
  auto cfg = api_config();
  auto refused = run_spool({"serve", "--config", cfg, "--http", "0.0.0.0:0"}, env);
  CHECK(refused.exit_code == 2);
  CHECK_THAT(refused.err, Catch::Contains("no API token exists"));
  server s{cfg, env};
  CHECK_THAT(s.proc.output(), Catch::Contains("open: no API token exists yet"));
  CHECK(call(s.port, "POST", "/api/v2/jobs", "", R"({"channel_id": "UCopen"})").status == 201);
  CHECK(call(s.port, "GET", "/api/v2/jobs", "").status == 200);
  make_token(env, {"--admin"});
  CHECK(eventually([&] { return call(s.port, "GET", "/api/v2/jobs", "").status == 401; }, 15,
                   std::chrono::milliseconds{250}));
}

TEST_CASE_METHOD(worker_fixture,
                 "uploads: 50 MiB pass and one byte more is refused with nothing left, types "
                 "are told by content, the same bytes are stored once, ranges, other clients",
                 "[db][api]") {
  char tmpl[] = "/tmp/spool_assetsXXXXXX";
  REQUIRE(::mkdtemp(tmpl) != nullptr);
  std::string data{tmpl};
  auto cfg = api_config(1000, 1000, data);
  auto acme = make_token(env, {"--client", "acme"});
  auto globex = make_token(env, {"--client", "globex"});
  server s{cfg, env};
  namespace fs = std::filesystem;
  auto stored = [&] {
    int n = 0;
    for (auto& e : fs::recursive_directory_iterator(data + "/assets"))
      n += e.is_regular_file();
    return n;
  };
  const std::string png_magic = "\x89PNG\r\n\x1a\n";
  std::string max = png_magic + std::string((50u << 20) - png_magic.size(), 'x');
  REQUIRE(max.size() == 52428800);

  // Without a token the upload is refused before a byte is stored.
  auto anonymous = call(s.port, "POST", "/api/v2/upload-asset", "", max, {}, 60);
  CHECK(anonymous.status == 401);
  CHECK(stored() == 0);
  CHECK(call(s.port, "GET", "/api/v2/nothing", acme).body.at("error").at("code").as_string()
        == "not_found");
  // One byte over, announced (Content-Length) and streamed (chunked).
  auto over = max + "x";
  CHECK(call(s.port, "POST", "/api/v2/upload-asset", acme, over, {}, 60).status == 413);
  CHECK(call(s.port, "POST", "/api/v2/upload-asset", acme, over, {}, 60, true).status == 413);
  CHECK(stored() == 0); // nothing of them, not even in .incoming

  auto up = call(s.port, "POST", "/api/v2/upload-asset", acme, max, {}, 60, true);
  REQUIRE(up.status == 201);
  CHECK(up.body.at("type").as_string() == "image/png");
  CHECK(up.body.at("bytes").as_int64() == 52428800);
  auto url = std::string{up.body.at("url").as_string()};
  CHECK(url.starts_with("/api/v2/assets/acme/"));
  CHECK(stored() == 1);
  auto again = call(s.port, "POST", "/api/v2/upload-asset", acme, max, {}, 60);
  CHECK(again.status == 200);
  CHECK_FALSE(again.body.at("created").as_bool());
  CHECK(std::string{again.body.at("url").as_string()} == url);
  CHECK(stored() == 1);

  // An executable named .png (the name is never read), an empty body.
  auto elf = read_text("/bin/ls");
  REQUIRE(elf.starts_with("\x7f" "ELF"));
  auto disguised = call(s.port, "POST", "/api/v2/upload-asset?name=cat.png", acme, elf);
  CHECK(disguised.status == 415);
  CHECK(disguised.body.at("error").at("code").as_string() == "unsupported_media_type");
  CHECK(call(s.port, "POST", "/api/v2/upload-asset", acme, "").status == 400);
  CHECK(stored() == 1);
  // The other accepted types.
  using namespace std::string_literals;
  for (std::string head : {"\xff\xd8\xff\xe0"s, "RIFF\x10\0\0\0WEBPVP8 "s, "RIFF\x10\0\0\0WAVEfmt "s,
                           "\0\0\0\x18" "ftypisom"s, "\0\0\0\x14" "ftypqt  "s, "ID3\x04\0"s}) {
    INFO(head);
    CHECK(call(s.port, "POST", "/api/v2/upload-asset", acme, head + "payload").status == 201);
  }

  // Ranges; another client sees nothing of it.
  auto part = call(s.port, "GET", url, acme, {}, {"Range: bytes=1-3"});
  CHECK(part.status == 206);
  CHECK(part.raw == "PNG");
  CHECK(part.header("Content-Range") == "bytes 1-3/52428800");
  auto tail = call(s.port, "GET", url, acme, {}, {"Range: bytes=-4"});
  CHECK(tail.status == 206);
  CHECK(tail.raw == "xxxx");
  CHECK(call(s.port, "GET", url, acme, {}, {"Range: bytes=52428800-"}).status == 416);
  auto whole = call(s.port, "GET", url, acme, {}, {}, 60);
  CHECK(whole.status == 200);
  CHECK(whole.raw.size() == 52428800);
  CHECK(whole.header("Accept-Ranges") == "bytes");
  CHECK(call(s.port, "GET", url, globex).status == 404);
  CHECK(call(s.port, "GET", "/api/v2/assets/acme/..%2F..%2Fetc.png", acme).status == 404);
  CHECK(call(s.port, "POST", "/api/v2/upload-asset?client=acme", globex, max).status == 403);
  fs::remove_all(data);
}

TEST_CASE_METHOD(worker_fixture,
                 "brand guidelines and a campaign brief reach every stage's input, set by the "
                 "CLI and the API",
                 "[db][api]") {
  // A stage program that answers with the context it was given.
  auto cfg = temp_file(R"X({"worker": {"idle_poll_s": 0.2, "heartbeat_interval_s": 0.5,
    "rescue_interval_s": 0.5, "shutdown_grace_s": 5, "lease_s": 3},
    "stages": [{"name": "storyboard", "executor": {"kind": "command", "argv": ["python3", "-c",
      "import json,sys; d=json.load(sys.stdin); print(json.dumps({'status': 'ok', 'output': {'context': d['context']}}))"]}}]})X");
  auto acme = make_token(env, {"--client", "acme"});
  auto bad = run_spool({"brand", "set", "acme", "--json", R"({"colors": {"a": 1}})"}, env);
  CHECK(bad.exit_code == 2);
  CHECK_THAT(bad.err, Catch::Contains("guidelines.colors: must be text"));
  auto set = run_spool({"brand", "set", "acme", "--json",
                        R"({"voice": "warm", "colors": ["teal", "sand"]})"},
                       env);
  INFO(set.err);
  REQUIRE(set.exit_code == 0);
  server s{cfg, env};
  auto brief = call(s.port, "PUT", "/api/v2/campaigns/spring", acme,
                    R"({"brief": {"goal": "launch", "audience": "makers"}})");
  REQUIRE(brief.status == 201);
  CHECK(brief.body.at("client_id").as_string() == "acme");
  CHECK(call(s.port, "PUT", "/api/v2/campaigns/spring", acme, R"({"brief": {"x": {}}})")
          .error_field()
        == "brief.x");
  auto globex = make_token(env, {"--client", "globex"});
  CHECK(call(s.port, "GET", "/api/v2/campaigns/spring", globex).status == 404);
  CHECK(call(s.port, "PUT", "/api/v2/brands/acme", globex, R"({"guidelines": {}})").status
        == 404);
  CHECK(call(s.port, "GET", "/api/v2/brands/acme", acme).body.at("guidelines").at("voice")
          .as_string()
        == "warm");

  auto with = call(s.port, "POST", "/api/v2/jobs", acme,
                   R"({"channel_id": "UCa", "campaign_id": "spring"})");
  auto without = call(s.port, "POST", "/api/v2/jobs", globex, R"({"channel_id": "UCg"})");
  REQUIRE(with.status == 201);
  REQUIRE(without.status == 201);
  spool_process w{{"run", "--config", cfg, "--exit-when-idle"}, env};
  REQUIRE(w.wait(60) == 0);
  auto ctx = json::parse(text("SELECT output::text FROM stage_runs WHERE task_id = "
                              + std::to_string(with.body.at("id").as_int64())))
               .at("context");
  CHECK(ctx.at("client_id").as_string() == "acme");
  CHECK(ctx.at("brand").at("colors").as_array().size() == 2);
  CHECK(ctx.at("brief").at("goal").as_string() == "launch");
  CHECK(ctx.at("prompt_context").as_string()
        == "Brand acme: colors: teal, sand; voice: warm. Campaign spring: audience: makers; "
           "goal: launch.");
  auto none = json::parse(text("SELECT output::text FROM stage_runs WHERE task_id = "
                               + std::to_string(without.body.at("id").as_int64())))
                .at("context");
  CHECK(none.at("brand").is_null());
  CHECK(none.at("prompt_context").as_string() == "");
}

TEST_CASE_METHOD(worker_fixture, "the client API can run inside a worker (spool run --api)",
                 "[db][api]") {
  auto cfg = temp_file(R"({"worker": {"idle_poll_s": 0.2, "heartbeat_interval_s": 0.5,
    "rescue_interval_s": 0.5, "shutdown_grace_s": 5, "lease_s": 3},
    "stages": [{"name": "a", "executor": {"latency": {"dist": "fixed", "ms": 5}}}]})");
  spool_process w{{"run", "--config", cfg, "--api", "127.0.0.1:0"}, env};
  int port = 0;
  REQUIRE(eventually([&] {
    auto out = w.output();
    const std::string marker = "client API and status page on http://127.0.0.1:";
    auto at = out.find(marker);
    if (at == std::string::npos)
      return false;
    port = std::stoi(out.substr(at + marker.size()));
    return true;
  }));
  auto job = call(port, "POST", "/api/v2/jobs", "", R"({"channel_id": "UCin"})");
  REQUIRE(job.status == 201);
  auto id = std::to_string(job.body.at("id").as_int64());
  CHECK(eventually([&] {
    return call(port, "GET", "/api/v2/jobs/" + id, "").body.at("state").as_string()
           == "completed";
  }));
  CHECK(call(port, "GET", "/", "").status == 200);
  w.signal(SIGTERM);
  CHECK(w.wait(30) == 0);
}
