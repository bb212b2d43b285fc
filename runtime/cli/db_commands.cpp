// spool db start|stop|status|url: the managed local PostgreSQL cluster.

#include "runtime/cli/commands.hpp"
#include "runtime/local_db.hpp"

#include <CLI/CLI.hpp>

#include <iostream>

namespace spool::cli {

void add_db_commands(CLI::App& app, context& ctx) {
  auto db = app.add_subcommand("db", "Manage the local PostgreSQL cluster under .spool/pg");
  db->require_subcommand(1);
  db->add_subcommand("start", "Initialize (first time) and start the cluster; idempotent")
    ->callback([&ctx] {
      ctx.action = [] {
        local_cluster c;
        c.start();
        std::cout << c.url() << "\n";
        return 0;
      };
    });
  db->add_subcommand("stop", "Stop the cluster (fast shutdown)")->callback([&ctx] {
    ctx.action = [] {
      local_cluster{}.stop();
      return 0;
    };
  });
  db->add_subcommand("status", "Say whether the cluster runs, where, and its URL")
    ->callback([&ctx] {
      ctx.action = [] {
        local_cluster c;
        bool up = c.running();
        std::cout << "cluster: " << (up ? "running" : "stopped") << "\n"
                  << "data:    " << c.data_dir().string() << "\n";
        if (up)
          std::cout << "url:     " << c.url() << "\n";
        return up ? 0 : 3;
      };
    });
  db->add_subcommand("url", "Print the libpq URL of the database commands use")
    ->callback([&ctx] {
      ctx.action = [] {
        std::cout << resolve_database_url() << "\n";
        return 0;
      };
    });
}

} // namespace spool::cli
