// spool migrate up [--to N] | down [--steps N] | status

#include "runtime/cli/commands.hpp"
#include "runtime/local_db.hpp"
#include "runtime/migrations.hpp"
#include "runtime/pg/connection.hpp"

#include <CLI/CLI.hpp>

#include <cstdio>
#include <iostream>
#include <memory>

namespace spool::cli {

namespace {

struct migrate_options {
  std::string dir; // empty: the migrations compiled into the binary
  int64_t to = -1;
  int64_t steps = 1;
};

std::vector<migration> migration_set(const migrate_options& o) {
  return o.dir.empty() ? builtin_migrations() : load_migrations(o.dir);
}

int print_status(pg::connection& conn, const migrate_options& o) {
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

} // namespace

void add_migrate_commands(CLI::App& app, context& ctx) {
  auto opts = std::make_shared<migrate_options>();
  auto mig = app.add_subcommand("migrate", "Apply, revert or list schema migrations");
  mig->require_subcommand(1);
  mig->add_option("--dir", opts->dir,
                  "Read migrations from this directory instead of the built-in set");
  auto up = mig->add_subcommand("up", "Apply pending migrations");
  up->add_option("--to", opts->to, "Stop after this version")->check(CLI::NonNegativeNumber);
  up->callback([&ctx, opts] {
    ctx.action = [opts] {
      pg::connection conn{resolve_database_url()};
      migrator m{conn, migration_set(*opts)};
      auto done = m.up(opts->to >= 0 ? std::optional<int64_t>{opts->to} : std::nullopt);
      std::cout << (done.empty() ? "nothing to apply" : "applied "
                                                          + std::to_string(done.size())
                                                          + " migration(s)")
                << "\n";
      return 0;
    };
  });
  auto down = mig->add_subcommand("down", "Revert the last applied migrations");
  down->add_option("--steps", opts->steps, "How many to revert (default 1)")
    ->check(CLI::PositiveNumber);
  down->callback([&ctx, opts] {
    ctx.action = [opts] {
      pg::connection conn{resolve_database_url()};
      migrator m{conn, migration_set(*opts)};
      auto done = m.down(opts->steps);
      std::cout << "reverted " << done.size() << " migration(s)\n";
      return 0;
    };
  });
  mig->add_subcommand("status", "List migrations and whether each is applied")
    ->callback([&ctx, opts] {
      ctx.action = [opts] {
        pg::connection conn{resolve_database_url()};
        return print_status(conn, *opts);
      };
    });
}

} // namespace spool::cli
