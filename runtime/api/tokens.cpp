#include "runtime/api/tokens.hpp"

#include "runtime/pg/connection.hpp"
#include "runtime/store/task_input.hpp"

#include <boost/json.hpp>

#include <cstdio>
#include <fstream>
#include <stdexcept>

namespace spool::api {

namespace {

std::string random_hex(int bytes) {
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  std::string out;
  for (int i = 0; i < bytes; ++i) {
    unsigned char c = 0;
    urandom.read(reinterpret_cast<char*>(&c), 1);
    if (!urandom)
      throw std::runtime_error("cannot read /dev/urandom for a token");
    char buf[3];
    std::snprintf(buf, sizeof buf, "%02x", c);
    out += buf;
  }
  return out;
}

} // namespace

created_token create_token(pg::connection& conn, const std::optional<std::string>& client_id,
                           const std::string& name, const std::string& created_by) {
  if (client_id && !store::valid_channel_id(*client_id))
    throw std::invalid_argument("--client: 1-128 letters, digits and _ - . : @, got "
                                + store::quote(*client_id));
  if (name.size() > 200)
    throw std::invalid_argument("--name: at most 200 bytes");
  created_token out;
  out.token = "spool_" + random_hex(20);
  out.id = conn
             .query("INSERT INTO spool_api_tokens (client_id, name, hash, prefix, created_by) "
                    "VALUES ($1, $2, sha256(convert_to($3, 'UTF8')), $4, $5) RETURNING id",
                    client_id, name, out.token, out.token.substr(0, 10), created_by)
             .i64(0, 0);
  return out;
}

bool revoke_token(pg::connection& conn, int64_t id) {
  return conn
           .query("UPDATE spool_api_tokens SET revoked_at = now() WHERE id = $1 "
                  "AND revoked_at IS NULL",
                  id)
           .affected()
         == 1;
}

boost::json::value list_tokens(pg::connection& conn) {
  auto r = conn.exec("SELECT id, client_id, name, prefix, created_at::text, created_by, "
                     "revoked_at::text, last_used_at::text FROM spool_api_tokens ORDER BY id",
                     {}, "listing tokens");
  boost::json::array out;
  auto opt = [&](int row, int col) {
    return r.is_null(row, col) ? boost::json::value(nullptr) : boost::json::value(r.str(row, col));
  };
  for (int i = 0; i < r.rows(); ++i)
    out.push_back(boost::json::object{{"id", r.i64(i, 0)},
                                      {"client_id", opt(i, 1)},
                                      {"name", r.str(i, 2)},
                                      {"prefix", r.str(i, 3)},
                                      {"created_at", r.str(i, 4)},
                                      {"created_by", opt(i, 5)},
                                      {"revoked_at", opt(i, 6)},
                                      {"last_used_at", opt(i, 7)}});
  return out;
}

std::optional<principal> verify_token(pg::connection& conn, const std::string& token) {
  if (token.size() != 46 || !token.starts_with("spool_"))
    return std::nullopt; // not one of ours: no query
  auto r = conn.query(
    "UPDATE spool_api_tokens SET last_used_at = CASE WHEN last_used_at IS NULL "
    "OR last_used_at < now() - interval '1 minute' THEN now() ELSE last_used_at END "
    "WHERE hash = sha256(convert_to($1, 'UTF8')) AND revoked_at IS NULL "
    "RETURNING id, coalesce(client_id, '')",
    token);
  if (r.rows() == 0)
    return std::nullopt;
  return principal{r.i64(0, 0), r.str(0, 1)};
}

bool any_live_token(pg::connection& conn) {
  return conn.exec("SELECT EXISTS (SELECT 1 FROM spool_api_tokens WHERE revoked_at IS NULL)", {},
                   "looking for tokens")
    .boolean(0, 0);
}

} // namespace spool::api
