// The command executor's contract: job input JSON and result parsing, on
// synthetic results and through real processes.

#include "runtime/exec/command_runner.hpp"
#include "runtime/exec/contract.hpp"

#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <cerrno>
#include <chrono>
#include <future>
#include <memory>

using namespace std::chrono_literals;
using spool::outcome_kind;
using spool::exec::command_result;
using spool::exec::command_runner;
using spool::exec::command_spec;
using spool::exec::job_input;
using spool::exec::make_job_input;
using spool::exec::parse_command_result;
using Catch::Contains;
using Catch::StartsWith;
using ending = command_result::ending;

namespace {

command_result exited(std::string out, int code = 0, std::string err = "") {
  command_result r;
  r.how = ending::exited;
  r.exit_code = code;
  r.stdout_data = std::move(out);
  r.stderr_tail = std::move(err);
  return r;
}

/// Runs a shell script through a runner and parses its result.
spool::outcome run_script(std::string script, std::string stdin_data = "") {
  command_runner runner;
  auto promise = std::make_shared<std::promise<command_result>>();
  auto future = promise->get_future();
  command_spec spec;
  spec.argv = {"sh", "-c", std::move(script)};
  spec.stdin_data = std::move(stdin_data);
  spec.timeout = 30s;
  runner.start(std::move(spec), [promise](command_result r) {
    promise->set_value(std::move(r));
  });
  REQUIRE(future.wait_for(60s) == std::future_status::ready);
  return parse_command_result(future.get());
}

} // namespace

// -- job input ----------------------------------------------------------------

TEST_CASE("the job input carries every field and embeds JSON as JSON",
          "[exec][contract]") {
  job_input in;
  in.task_id = 12;
  in.stage = "assembly";
  in.attempt = 1;
  in.work_dir = "/abs/data/tasks/12/assembly";
  in.data_dir = "/abs/data";
  in.channel_id = "ch1";
  in.priority = "normal";
  in.payload_json = R"({"title":"Cats \"and\" dogs","scenes":3})";
  in.inputs = {{"video_gen", R"({"clips":["a.mp4"]})"},
               {"narration", R"({"audio":"n.mp3"})"}};
  auto text = make_job_input(in);
  CHECK(text.find('\n') == std::string::npos);
  auto v = boost::json::parse(text).as_object();
  CHECK(v.at("task_id").as_int64() == 12);
  CHECK(v.at("stage").as_string() == "assembly");
  CHECK(v.at("attempt").as_int64() == 1);
  CHECK(v.at("idempotency_key").as_string() == "12:assembly:1");
  CHECK(v.at("work_dir").as_string() == "/abs/data/tasks/12/assembly");
  CHECK(v.at("data_dir").as_string() == "/abs/data");
  CHECK(v.at("channel_id").as_string() == "ch1");
  CHECK(v.at("priority").as_string() == "normal");
  CHECK(v.at("payload").at("title").as_string() == "Cats \"and\" dogs");
  CHECK(v.at("payload").at("scenes").as_int64() == 3);
  CHECK(v.at("inputs").at("video_gen").at("clips").at(0).as_string()
        == "a.mp4");
  CHECK(v.at("inputs").at("narration").at("audio").as_string() == "n.mp3");
}

TEST_CASE("a payload or input that is not a JSON object is sent as {}",
          "[exec][contract]") {
  job_input in;
  in.task_id = 3;
  in.stage = "sfx";
  in.payload_json = "{not json";
  in.inputs = {{"asset_gen", "[1,2]"}, {"narration", ""}};
  auto v = boost::json::parse(make_job_input(in)).as_object();
  CHECK(v.at("payload").as_object().empty());
  CHECK(v.at("inputs").at("asset_gen").as_object().empty());
  CHECK(v.at("inputs").at("narration").as_object().empty());
  CHECK(v.at("idempotency_key").as_string() == "3:sfx:1");
}

// -- ok results ---------------------------------------------------------------

TEST_CASE("an ok result on the last non-empty line is parsed",
          "[exec][contract]") {
  auto o = parse_command_result(exited(
    "progress 10%\n{\"status\":\"error\",\"class\":\"permanent\"}\n"
    "{\"status\":\"ok\",\"output\":{\"url\":\"v.mp4\",\"n\":[1,2]},"
    "\"cost\":0.05,\"extra\":true}\n\n  \n"));
  CHECK(o.kind == outcome_kind::ok);
  CHECK(o.output == R"({"url":"v.mp4","n":[1,2]})");
  CHECK(o.cost == 0.05);
  CHECK(o.message.empty());
}

TEST_CASE("an ok result without output or cost gets {} and 0",
          "[exec][contract]") {
  auto o = parse_command_result(exited(R"({"status":"ok"})"));
  CHECK(o.kind == outcome_kind::ok);
  CHECK(o.output == "{}");
  CHECK(o.cost == 0);
  CHECK(parse_command_result(exited("{\"status\":\"ok\",\"cost\":2}\r\n")).cost
        == 2);
}

TEST_CASE("an ok result with bad fields is transient and names the field",
          "[exec][contract]") {
  auto o = parse_command_result(exited(R"({"status":"ok","output":[1]})"));
  CHECK(o.kind == outcome_kind::transient);
  CHECK(o.message == R"(result: "output" must be an object)");

  o = parse_command_result(exited(R"({"status":"ok","cost":-1})"));
  CHECK(o.kind == outcome_kind::transient);
  CHECK(o.message == R"(result: "cost" must be a non-negative number, got -1)");

  o = parse_command_result(exited(R"({"status":"ok","cost":1,"output":2})"));
  CHECK(o.kind == outcome_kind::transient);
  CHECK(o.cost == 1);

  o = parse_command_result(exited(R"({"status":"ok","cost":"1"})"));
  CHECK(o.kind == outcome_kind::transient);
  CHECK_THAT(o.message, StartsWith(R"(result: "cost" must be)"));
}

TEST_CASE("an ok result with a non-zero exit code is transient",
          "[exec][contract]") {
  auto o = parse_command_result(
    exited(R"({"status":"ok","cost":0.5})", 3, "warning: half done\n"));
  CHECK(o.kind == outcome_kind::transient);
  CHECK(o.message == "exit code 3 with status ok; stderr: warning: half done");
  CHECK(o.cost == 0.5); // the money was spent all the same
}

// -- error results ------------------------------------------------------------

TEST_CASE("each error class in a result maps to its outcome kind",
          "[exec][contract]") {
  for (auto k : {outcome_kind::transient, outcome_kind::network,
                 outcome_kind::rate_limited, outcome_kind::permanent,
                 outcome_kind::timeout}) {
    auto o = parse_command_result(
      exited(R"({"status":"error","class":")" + std::string{to_string(k)}
             + R"(","message":"upstream said no"})"));
    CHECK(o.kind == k);
    CHECK(o.message == "upstream said no");
    CHECK(o.output == "{}");
  }
}

TEST_CASE("an error result is used whatever the exit code",
          "[exec][contract]") {
  auto o = parse_command_result(exited(
    R"({"status":"error","class":"rate_limited","retry_after_s":30,)"
    R"("message":"429","cost":0.01})",
    1, "HTTP 429\n"));
  CHECK(o.kind == outcome_kind::rate_limited);
  CHECK(o.retry_after_s == 30);
  CHECK(o.message == "429");
  CHECK(o.cost == 0.01);

  command_result killed;
  killed.how = ending::signaled;
  killed.signal = 9;
  killed.stdout_data = R"({"status":"error","class":"network"})";
  o = parse_command_result(killed);
  CHECK(o.kind == outcome_kind::network);
  CHECK(o.message == "the command reported a network error");
}

TEST_CASE("an error result with a bad class or retry_after_s is transient",
          "[exec][contract]") {
  auto o = parse_command_result(
    exited(R"({"status":"error","class":"ok","message":"x"})", 2));
  CHECK(o.kind == outcome_kind::transient);
  CHECK(o.message
        == R"(result: "class" must be one of transient, network, )"
           R"(rate_limited, permanent, timeout, got "ok"; exit code 2)");

  o = parse_command_result(exited(R"({"status":"error"})"));
  CHECK(o.kind == outcome_kind::transient);
  CHECK_THAT(o.message, Contains("got nothing"));

  o = parse_command_result(exited(
    R"({"status":"error","class":"rate_limited","retry_after_s":-5})"));
  CHECK(o.kind == outcome_kind::transient);
  CHECK(o.message
        == R"(result: "retry_after_s" must be a non-negative number, got -5)");
}

TEST_CASE("a non-string error message is kept as JSON text",
          "[exec][contract]") {
  auto o = parse_command_result(exited(
    R"({"status":"error","class":"permanent","message":{"code":400}})"));
  CHECK(o.kind == outcome_kind::permanent);
  CHECK(o.message == R"({"code":400})");
}

// -- no valid result ----------------------------------------------------------

TEST_CASE("stdout without a result is transient with the stderr tail",
          "[exec][contract]") {
  auto o = parse_command_result(exited("", 0));
  CHECK(o.kind == outcome_kind::transient);
  CHECK(o.message == "result: no JSON object on stdout");

  o = parse_command_result(exited("all done!\n", 1, "Traceback: boom\n"));
  CHECK(o.kind == outcome_kind::transient);
  CHECK_THAT(o.message,
             StartsWith("result: the last line of stdout is not JSON"));
  CHECK_THAT(o.message,
             Contains("): all done!; exit code 1; stderr: Traceback: boom"));

  o = parse_command_result(exited("[1,2,3]\n"));
  CHECK(o.message
        == "result: the last line of stdout is not a JSON object: [1,2,3]");

  o = parse_command_result(exited(R"({"status":"done"})"));
  CHECK(o.kind == outcome_kind::transient);
  CHECK(o.message == R"(result: "status" must be "ok" or "error")");
}

TEST_CASE("messages are valid UTF-8 even when stderr is not",
          "[exec][contract]") {
  auto r = exited("garbage", 1);
  const char raw[] = "\x9f\xa4 cut\xff bytes and a \0 nul";
  r.stderr_tail = std::string{raw, sizeof(raw) - 1};
  auto o = parse_command_result(r);
  CHECK(o.kind == outcome_kind::transient);
  CHECK_THAT(o.message, Contains("; stderr: cut? bytes and a ? nul"));
}

// -- endings without a result -------------------------------------------------

TEST_CASE("timeout, cancel and spawn failure map to their kinds",
          "[exec][contract]") {
  command_result r;
  r.how = ending::timed_out;
  r.signal = 15;
  r.elapsed = 1500ms;
  r.stderr_tail = "still rendering\n";
  auto o = parse_command_result(r);
  CHECK(o.kind == outcome_kind::timeout);
  CHECK(o.message
        == "timed out after 1500 ms; killed by signal 15 (SIGTERM); stderr: "
           "still rendering");

  r = {};
  r.how = ending::cancelled;
  CHECK(parse_command_result(r).kind == outcome_kind::cancelled);

  r = {};
  r.how = ending::spawn_failed;
  r.error = "examples/stages/x: No such file or directory";
  o = parse_command_result(r);
  CHECK(o.kind == outcome_kind::permanent);
  CHECK(o.message
        == "cannot start the command: examples/stages/x: No such file or "
           "directory");

  r.error = "creating pipes: Too many open files";
  r.error_code = EMFILE;
  CHECK(parse_command_result(r).kind == outcome_kind::transient);
}

// -- through real processes ---------------------------------------------------

TEST_CASE("a command's ok result is parsed end to end", "[exec][contract]") {
  job_input in;
  in.task_id = 12;
  in.stage = "assembly";
  // The script echoes the idempotency key it read from stdin.
  auto o = run_script(
    R"sh(input=$(cat); echo "working..."; )sh"
    R"sh(key=$(printf '%s' "$input" )sh"
    R"sh(| sed 's/.*"idempotency_key":"\([^"]*\)".*/\1/'); )sh"
    R"sh(printf '{"status":"ok","output":{"key":"%s"},"cost":0.05}\n' )sh"
    R"sh("$key")sh",
    make_job_input(in));
  CHECK(o.kind == outcome_kind::ok);
  CHECK(o.output == R"({"key":"12:assembly:1"})");
  CHECK(o.cost == 0.05);
}

TEST_CASE("a command's error result is parsed end to end", "[exec][contract]") {
  auto o = run_script(
    R"(echo '{"status":"error","class":"rate_limited","retry_after_s":30,)"
    R"("message":"slow down"}'; exit 1)");
  CHECK(o.kind == outcome_kind::rate_limited);
  CHECK(o.retry_after_s == 30);
  CHECK(o.message == "slow down");
}

TEST_CASE("a command printing garbage is transient with its stderr",
          "[exec][contract]") {
  auto o =
    run_script("echo 'Segmentation fault?'; echo 'disk full' >&2; exit 2");
  CHECK(o.kind == outcome_kind::transient);
  CHECK_THAT(o.message, Contains("exit code 2; stderr: disk full"));
}

TEST_CASE("a missing program is a permanent failure", "[exec][contract]") {
  command_runner runner;
  auto promise = std::make_shared<std::promise<command_result>>();
  auto future = promise->get_future();
  command_spec spec;
  spec.argv = {"examples/stages/does-not-exist"};
  runner.start(std::move(spec), [promise](command_result r) {
    promise->set_value(std::move(r));
  });
  REQUIRE(future.wait_for(60s) == std::future_status::ready);
  auto o = parse_command_result(future.get());
  CHECK(o.kind == outcome_kind::permanent);
  CHECK_THAT(o.message,
             Contains("examples/stages/does-not-exist: No such file"));
}

TEST_CASE("a result line that is not valid UTF-8 is named as such", "[contract]") {
  spool::exec::command_result r;
  r.how = spool::exec::command_result::ending::exited;
  r.exit_code = 0;
  r.stdout_data = "{\"status\":\"ok\",\"output\":{\"t\":\"caf\xc3 \xff\"}}\n";
  auto o = spool::exec::parse_command_result(r);
  CHECK(o.kind == spool::outcome_kind::transient);
  CHECK_THAT(o.message, Catch::Contains("not valid UTF-8") && Catch::Contains("byte 33"));
}
