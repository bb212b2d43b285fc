// spool db start|stop|status|url: the managed local PostgreSQL cluster.

#include "cli/commands.hpp"
#include "runtime/local_db.hpp"

#include <iostream>

namespace spool::cli {

int db_start() {
  local_cluster c;
  c.start();
  std::cout << c.url() << "\n";
  return 0;
}

int db_stop() {
  local_cluster{}.stop();
  return 0;
}

int db_status() {
  local_cluster c;
  bool up = c.running();
  std::cout << "cluster: " << (up ? "running" : "stopped") << "\n"
            << "data:    " << c.data_dir().string() << "\n";
  if (up)
    std::cout << "url:     " << c.url() << "\n";
  return up ? 0 : 3;
}

int db_url(const global_options& g) {
  std::cout << database_url(g) << "\n";
  return 0;
}

} // namespace spool::cli
