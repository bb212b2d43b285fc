#pragma once
// Errors raised by the libpq layer: they carry the SQLSTATE and what Spool
// was doing when the error happened ("claiming video_gen jobs: ...").

#include <stdexcept>
#include <string>

namespace spool::pg {

/// A failed database operation. `sqlstate()` is empty for client-side errors
/// (connection refused, lost connection); `connection_lost()` says whether the
/// connection is unusable and a retry on a new one may succeed.
class error : public std::runtime_error {
public:
  error(std::string context, std::string message, std::string sqlstate = {},
        bool connection_lost = false);

  const std::string& context() const noexcept { return context_; }
  const std::string& message() const noexcept { return message_; }
  const std::string& sqlstate() const noexcept { return sqlstate_; }
  bool connection_lost() const noexcept { return connection_lost_; }

  /// Serialization failure or deadlock: the transaction may simply be retried.
  bool retryable() const noexcept {
    return sqlstate_ == "40001" || sqlstate_ == "40P01";
  }

  /// Whether the same call may succeed later unchanged: a lost connection,
  /// a timeout or cancel (class 57), a lock not available (55), a lack of
  /// resources (53), a system error (58) or a transaction conflict (40).
  /// Otherwise the statement's input is at fault (a data exception, a
  /// constraint, a program limit) and repeating it cannot help.
  bool transient() const noexcept {
    if (connection_lost_ || sqlstate_.empty())
      return true;
    auto cls = sqlstate_.substr(0, 2);
    return cls == "08" || cls == "40" || cls == "53" || cls == "55" || cls == "57"
           || cls == "58";
  }

private:
  std::string context_;
  std::string message_;
  std::string sqlstate_;
  bool connection_lost_;
};

/// `url` with any password replaced by "***", for messages and logs.
std::string redact_url(const std::string& url);

} // namespace spool::pg
