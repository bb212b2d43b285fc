// spool migrate up [--to N] | down [--steps N] | status

#include "cli/commands.hpp"
#include "runtime/migrations.hpp"
#include "runtime/pg/connection.hpp"

#include <cstdio>
#include <iostream>

namespace spool::cli {

namespace {

std::vector<migration> migration_set(const migrate_options& o) {
  return o.dir.empty() ? builtin_migrations() : load_migrations(o.dir);
}

} // namespace

int migrate_up(const global_options& g, const migrate_options& o) {
  pg::connection conn{database_url(g)};
  migrator m{conn, migration_set(o)};
  auto done = m.up(o.to >= 0 ? std::optional<int64_t>{o.to} : std::nullopt);
  if (done.empty())
    std::cout << "nothing to apply\n";
  else
    std::cout << "applied " << done.size() << " migration(s)\n";
  return 0;
}

int migrate_down(const global_options& g, const migrate_options& o) {
  pg::connection conn{database_url(g)};
  migrator m{conn, migration_set(o)};
  auto done = m.down(o.steps);
  std::cout << "reverted " << done.size() << " migration(s)\n";
  return 0;
}

int migrate_status(const global_options& g, const migrate_options& o) {
  pg::connection conn{database_url(g)};
  migrator m{conn, migration_set(o)};
  auto rows = m.status();
  int pending = 0;
  int changed = 0;
  std::printf("%-8s %-28s %s\n", "version", "name", "state");
  for (auto& r : rows) {
    std::string state = r.applied ? "applied " + *r.applied_at : "pending";
    if (r.changed)
      state += "  CHANGED since applied";
    pending += !r.applied;
    changed += r.changed;
    std::printf("%04lld     %-28s %s\n", static_cast<long long>(r.version),
                r.name.c_str(), state.c_str());
  }
  std::printf("%zu migrations: %zu applied, %d pending%s\n", rows.size(),
              rows.size() - static_cast<size_t>(pending), pending,
              changed ? ", some CHANGED" : "");
  return changed ? 1 : 0;
}

} // namespace spool::cli
