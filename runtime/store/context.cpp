#include "runtime/store/context.hpp"

#include "runtime/pg/connection.hpp"
#include "runtime/store/task_input.hpp"

#include <boost/json.hpp>

#include <stdexcept>

namespace spool::store {

namespace json = boost::json;

namespace {

bool scalar(const json::value& v) {
  return v.is_string() || v.is_number() || v.is_bool();
}

bool valid_key(std::string_view k) {
  if (k.empty() || k.size() > 64)
    return false;
  for (char c : k)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
      return false;
  return true;
}

std::optional<json::value> read_one(pg::connection& conn, const char* sql,
                                    const std::string& id) {
  auto r = conn.query(sql, id);
  if (r.rows() == 0)
    return std::nullopt;
  return json::parse(r.text(0, 0));
}

/// Throws std::invalid_argument naming `field` when `id` is not a client
/// or campaign id.
void check_id(const char* field, const std::string& id) {
  if (!valid_channel_id(id))
    throw std::invalid_argument(std::string{field}
                                + ": 1-128 letters, digits and _ - . : @, got " + quote(id));
}

} // namespace

std::string check_context_fields(const json::value& v, const std::string& what) {
  if (!v.is_object())
    return what + ": must be a JSON object of fields";
  if (json::serialize(v).size() > max_context_bytes)
    return what + ": at most " + std::to_string(max_context_bytes) + " bytes of JSON";
  for (const auto& [k, f] : v.as_object()) {
    auto path = what + "." + std::string{k};
    if (!valid_key(k))
      return what + ": field names are 1-64 of a-z, 0-9 and _, got " + quote(k);
    if (scalar(f))
      continue;
    if (f.is_array()) {
      for (const auto& x : f.as_array())
        if (!scalar(x))
          return path + ": a list holds text, numbers or flags only";
      continue;
    }
    return path + ": must be text, a number, a flag or a list of them";
  }
  return {};
}

void set_brand(pg::connection& conn, const std::string& client_id, const json::value& v,
               const std::string& by) {
  check_id("client", client_id);
  if (auto p = check_context_fields(v, "guidelines"); !p.empty())
    throw std::invalid_argument(p);
  conn.query("INSERT INTO spool_brands (client_id, guidelines, updated_by) VALUES ($1, $2, $3) "
             "ON CONFLICT (client_id) DO UPDATE SET guidelines = EXCLUDED.guidelines, "
             "updated_by = EXCLUDED.updated_by, updated_at = now()",
             client_id, json::serialize(v), by);
}

std::optional<json::value> brand(pg::connection& conn, const std::string& client_id) {
  return read_one(conn,
                  "SELECT json_build_object('client_id', client_id, 'guidelines', guidelines, "
                  "'updated_at', updated_at, 'updated_by', updated_by)::text "
                  "FROM spool_brands WHERE client_id = $1",
                  client_id);
}

void set_campaign(pg::connection& conn, const std::string& campaign_id,
                  const std::string& client_id, const json::value& v, const std::string& by) {
  check_id("campaign", campaign_id);
  if (!client_id.empty())
    check_id("client", client_id);
  if (auto p = check_context_fields(v, "brief"); !p.empty())
    throw std::invalid_argument(p);
  conn.query("INSERT INTO spool_campaigns (campaign_id, client_id, brief, updated_by) "
             "VALUES ($1, $2, $3, $4) ON CONFLICT (campaign_id) DO UPDATE SET "
             "client_id = EXCLUDED.client_id, brief = EXCLUDED.brief, "
             "updated_by = EXCLUDED.updated_by, updated_at = now()",
             campaign_id, client_id, json::serialize(v), by);
}

std::optional<json::value> campaign(pg::connection& conn, const std::string& campaign_id) {
  return read_one(conn,
                  "SELECT json_build_object('campaign_id', campaign_id, 'client_id', client_id, "
                  "'brief', brief, 'updated_at', updated_at, 'updated_by', updated_by)::text "
                  "FROM spool_campaigns WHERE campaign_id = $1",
                  campaign_id);
}

} // namespace spool::store
