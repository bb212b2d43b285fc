#pragma once
// Brand guidelines per client and briefs per campaign: JSON objects whose
// fields are text, numbers, flags or lists of them ({"voice": "warm",
// "colors": ["teal", "sand"]}). Every task enqueued afterwards for that
// client or campaign carries them to its stages (R_context.sql).

#include <boost/json/value.hpp>

#include <optional>
#include <string>

namespace spool::pg {
class connection;
}

namespace spool::store {

/// The largest guidelines or brief, as compact JSON: 64 KiB.
inline constexpr std::size_t max_context_bytes = 64 << 10;

/// Checks guidelines or a brief (`what` names it in messages: "guidelines");
/// returns the problem ("guidelines.colors: must be ...") or empty.
std::string check_context_fields(const boost::json::value& v, const std::string& what);

/// Sets a client's guidelines; throws std::invalid_argument naming the
/// problem (a bad client id, bad fields).
void set_brand(pg::connection& conn, const std::string& client_id, const boost::json::value& v,
               const std::string& by);
/// {"client_id", "guidelines", "updated_at", "updated_by"}, or nullopt.
std::optional<boost::json::value> brand(pg::connection& conn, const std::string& client_id);

/// Sets a campaign's brief (and the client it belongs to; "" for none).
void set_campaign(pg::connection& conn, const std::string& campaign_id,
                  const std::string& client_id, const boost::json::value& v,
                  const std::string& by);
/// {"campaign_id", "client_id", "brief", "updated_at", "updated_by"}, or nullopt.
std::optional<boost::json::value> campaign(pg::connection& conn, const std::string& campaign_id);

} // namespace spool::store
