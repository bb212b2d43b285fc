// spool brand set|show, spool campaign set|show: the context every stage of
// a client's or campaign's tasks gets (runtime/store/context.hpp).

#include "cli/commands.hpp"
#include "runtime/pg/connection.hpp"
#include "runtime/store/context.hpp"

#include <boost/json.hpp>

#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>

namespace spool::cli {

namespace {

/// The fields from --json or --file (exactly one of them).
boost::json::value fields_of(const context_options& o) {
  if (o.json.empty() == o.file.empty())
    throw std::invalid_argument("give the fields as --json TEXT or --file FILE");
  std::string text = o.json;
  if (!o.file.empty()) {
    std::ifstream in(o.file);
    if (!in)
      throw std::invalid_argument("--file: cannot read " + o.file);
    std::stringstream ss;
    ss << in.rdbuf();
    text = ss.str();
  }
  boost::json::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec)
    throw std::invalid_argument(std::string{o.file.empty() ? "--json" : "--file"}
                                + ": not JSON: " + ec.message());
  return v;
}

int show(const std::optional<boost::json::value>& v, const std::string& what) {
  if (!v) {
    std::cerr << "spool: no " << what << "\n";
    return 1;
  }
  std::cout << boost::json::serialize(*v) << "\n";
  return 0;
}

} // namespace

int brand_set(const global_options& g, const context_options& o) {
  auto v = fields_of(o);
  pg::connection conn{database_url(g)};
  store::set_brand(conn, o.id, v, cli_user());
  std::cout << "brand guidelines of " << o.id << " set: tasks enqueued from now on carry them\n";
  return 0;
}

int brand_show(const global_options& g, const std::string& client) {
  pg::connection conn{database_url(g)};
  return show(store::brand(conn, client), "brand guidelines for client " + client);
}

int campaign_set(const global_options& g, const context_options& o) {
  auto v = fields_of(o);
  pg::connection conn{database_url(g)};
  store::set_campaign(conn, o.id, o.client, v, cli_user());
  std::cout << "brief of campaign " << o.id << " set: tasks enqueued from now on carry it\n";
  return 0;
}

int campaign_show(const global_options& g, const std::string& campaign) {
  pg::connection conn{database_url(g)};
  return show(store::campaign(conn, campaign), "brief for campaign " + campaign);
}

} // namespace spool::cli
