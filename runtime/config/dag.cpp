#include "runtime/config/dag.hpp"

#include <algorithm>
#include <set>
#include <unordered_map>

namespace spool::config {

dag::dag(std::vector<node> nodes) {
  // Keys view into `nodes`, which lives until the end of the constructor.
  std::unordered_map<std::string_view, std::size_t> index;
  std::vector<const node*> kept;
  nodes_.reserve(nodes.size());
  for (const auto& n : nodes) {
    if (index.count(n.name) != 0)
      continue; // a repeated name keeps its first occurrence
    index.emplace(n.name, nodes_.size());
    nodes_.push_back(n.name);
    kept.push_back(&n);
  }
  upstream_.resize(nodes_.size());
  downstream_.resize(nodes_.size());
  for (std::size_t i = 0; i < kept.size(); ++i) {
    for (const auto& dep : kept[i]->after) {
      auto it = index.find(dep);
      if (it == index.end())
        continue;
      auto& up = upstream_[i];
      if (std::find(up.begin(), up.end(), it->second) != up.end())
        continue;
      up.push_back(it->second);
      downstream_[it->second].push_back(i);
    }
  }
  for (auto& down : downstream_)
    std::sort(down.begin(), down.end());
}

std::size_t dag::index_of(std::string_view name) const {
  for (std::size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i] == name)
      return i;
  return npos;
}

bool dag::contains(std::string_view name) const {
  return index_of(name) != npos;
}

std::vector<std::string> dag::names() const {
  return nodes_;
}

std::optional<std::vector<std::string>> dag::find_cycle() const {
  enum class color { white, gray, black };
  std::vector<color> colors(nodes_.size(), color::white);
  // Iterative DFS: each frame is a node and the next upstream edge to take.
  std::vector<std::pair<std::size_t, std::size_t>> stack;
  for (std::size_t start = 0; start < nodes_.size(); ++start) {
    if (colors[start] != color::white)
      continue;
    stack.emplace_back(start, 0);
    colors[start] = color::gray;
    while (!stack.empty()) {
      auto& [at, next] = stack.back();
      if (next == upstream_[at].size()) {
        colors[at] = color::black;
        stack.pop_back();
        continue;
      }
      auto to = upstream_[at][next++];
      if (colors[to] == color::gray) {
        // Back edge: the cycle is the stack from `to` up to here, plus `to`.
        std::vector<std::string> path;
        auto first =
          std::find_if(stack.begin(), stack.end(),
                       [to](const auto& f) { return f.first == to; });
        for (auto it = first; it != stack.end(); ++it)
          path.push_back(nodes_[it->first]);
        path.push_back(nodes_[to]);
        return path;
      }
      if (colors[to] == color::white) {
        colors[to] = color::gray;
        stack.emplace_back(to, 0);
      }
    }
  }
  return std::nullopt;
}

std::vector<std::string> dag::topo_order() const {
  // Kahn's algorithm with the ready set ordered by file position.
  std::vector<std::size_t> waiting(nodes_.size());
  std::set<std::size_t> ready;
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    waiting[i] = upstream_[i].size();
    if (waiting[i] == 0)
      ready.insert(i);
  }
  std::vector<std::string> order;
  order.reserve(nodes_.size());
  while (!ready.empty()) {
    auto i = *ready.begin();
    ready.erase(ready.begin());
    order.push_back(nodes_[i]);
    for (auto d : downstream_[i])
      if (--waiting[d] == 0)
        ready.insert(d);
  }
  return order;
}

std::vector<std::string> dag::upstream(std::string_view name) const {
  std::vector<std::string> result;
  if (auto i = index_of(name); i != npos)
    for (auto u : upstream_[i])
      result.push_back(nodes_[u]);
  return result;
}

std::vector<std::string> dag::downstream(std::string_view name) const {
  std::vector<std::string> result;
  if (auto i = index_of(name); i != npos)
    for (auto d : downstream_[i])
      result.push_back(nodes_[d]);
  return result;
}

std::vector<std::string> dag::roots() const {
  std::vector<std::string> result;
  for (std::size_t i = 0; i < nodes_.size(); ++i)
    if (upstream_[i].empty())
      result.push_back(nodes_[i]);
  return result;
}

} // namespace spool::config
