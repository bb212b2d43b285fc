#pragma once
// Bearer tokens of the client API. A token is "spool_" and 40 hex digits
// of randomness; the database keeps only its SHA-256 (computed by
// PostgreSQL's sha256()), so a stolen table holds no usable token.

#include <boost/json/value.hpp>

#include <cstdint>
#include <optional>
#include <string>

namespace spool::pg {
class connection;
}

namespace spool::api {

/// Who a request acts for.
struct principal {
  int64_t token_id = 0; // 0: no token (an open, loopback-only server)
  /// The client whose jobs it sees; empty for an admin.
  std::string client_id;
  bool admin() const noexcept { return client_id.empty(); }
};

struct created_token {
  int64_t id = 0;
  std::string token; // shown once
};

/// A new token for `client_id` (nullopt: an admin token). Throws
/// std::invalid_argument for a bad client id (1-128 of letters, digits and
/// _ - . : @) or a name over 200 bytes.
created_token create_token(pg::connection& conn, const std::optional<std::string>& client_id,
                           const std::string& name, const std::string& created_by);

/// Revokes a token; false when there is no such live token.
bool revoke_token(pg::connection& conn, int64_t id);

/// Every token (never the secret): id, client_id (null: admin), name,
/// prefix, created_at, created_by, revoked_at, last_used_at.
boost::json::value list_tokens(pg::connection& conn);

/// The principal of a live token, nullopt for an unknown or revoked one.
/// Records its use (last_used_at, at most once a minute).
std::optional<principal> verify_token(pg::connection& conn, const std::string& token);

/// Whether any live token exists (without, the server is open on loopback).
bool any_live_token(pg::connection& conn);

} // namespace spool::api
