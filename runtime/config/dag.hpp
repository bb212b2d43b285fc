#pragma once
// The stage graph: stage names and the names each one waits for ("after").
// A plain value with no knowledge of configuration files; the config parser
// uses it to reject cycles and the snapshot to answer topology questions.

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace spool::config {

/// A directed graph of stages where an edge runs from a stage to each stage
/// it waits for. Nodes keep the order in which they were given ("file
/// order"), and every answer lists names in that order.
///
/// Tolerant of bad input so that a validator can build one before it knows
/// the input is clean: a repeated node name keeps its first occurrence, and
/// `after` entries that name no node (or repeat) are ignored here and
/// reported by the validator.
class dag {
public:
  // -- member types -----------------------------------------------------------

  /// One stage: its name and the stages it waits for.
  struct node {
    std::string name;
    std::vector<std::string> after;
  };

  // -- constructors -----------------------------------------------------------

  /// An empty graph.
  dag() = default;

  /// Builds the graph from nodes in file order.
  explicit dag(std::vector<node> nodes);

  // -- properties -------------------------------------------------------------

  /// Number of (distinct) nodes.
  std::size_t size() const noexcept {
    return nodes_.size();
  }

  /// Whether a node with this name exists.
  bool contains(std::string_view name) const;

  /// All node names in file order.
  std::vector<std::string> names() const;

  // -- topology ---------------------------------------------------------------

  /// Returns a dependency cycle as a path that starts and ends with the same
  /// name, following `after` edges (`{"a", "b", "a"}` when a waits for b and
  /// b waits for a; `{"a", "a"}` for a stage that waits for itself), or
  /// nullopt when the graph is acyclic. Among several cycles, reports the one
  /// found first by a depth-first search in file order.
  std::optional<std::vector<std::string>> find_cycle() const;

  /// Every node after all the nodes it waits for; among nodes that are ready
  /// at the same time, file order wins (stable). Nodes on or behind a cycle
  /// cannot be ordered and are left out, so the result is shorter than
  /// `size()` exactly when there is a cycle.
  std::vector<std::string> topo_order() const;

  /// Direct upstream: the known, distinct stages `name` waits for, in its
  /// `after` order. Empty for an unknown name.
  std::vector<std::string> upstream(std::string_view name) const;

  /// Direct downstream: the stages that wait for `name`, in file order.
  /// Empty for an unknown name.
  std::vector<std::string> downstream(std::string_view name) const;

  /// Stages that wait for nothing, in file order.
  std::vector<std::string> roots() const;

private:
  /// Index of `name` in nodes_, or npos.
  std::size_t index_of(std::string_view name) const;

  static constexpr std::size_t npos = static_cast<std::size_t>(-1);

  std::vector<std::string> nodes_;
  /// upstream_[i]: indices of the nodes that node i waits for (deduplicated,
  /// unknown names dropped), in its `after` order.
  std::vector<std::vector<std::size_t>> upstream_;
  /// downstream_[i]: indices of the nodes that wait for node i, ascending.
  std::vector<std::vector<std::size_t>> downstream_;
};

} // namespace spool::config
