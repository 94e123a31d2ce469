// Minimum-weight perfect matching with per-shot edge weights, on PyMatching's sparse blossom.
//
// The matching graph is built once. For each shot, the edges touching its detection events
// take that shot's weights, the shot is matched, and the weights are put back: nothing is
// rebuilt per shot. With correlations, the first matching's edges lower the weights of the
// edges they share an error mechanism with, and the shot is matched again (PyMatching's
// two-pass correlated matching, on top of the per-shot weights).
//
// One matcher decodes one batch at a time (a mutex: the shared graph's weights change per shot),
// so several threads may share it. Weights are checked where they are read: a NaN, an infinity or
// a log-odds outside [0, MAX_LOG_ODDS] is an error naming the shot and edge, and a shot's weights
// are put back on every path out of it, errors included.
//
// Built against the sources of the PyMatching release named in setup.py (fetched at build time).

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "pymatching/sparse_blossom/matcher/mwpm.h"

namespace py = pybind11;

namespace {

// Log-odds weights become even integers (so that regions collide at integer times) on this scale;
// the largest accepted weight (MAX_LOG_ODDS) stays at 2^25, PyMatching's own range for edge weights
// (the Python side clips at 30).
constexpr double WEIGHT_SCALE = 1 << 19;
constexpr double MAX_LOG_ODDS = 32;

/// ``log_odds`` as the matcher's integer weight; ``what`` names it in the error if it is out of range.
template <typename Describe>
pm::weight_int to_weight_int(double log_odds, Describe what) {
    if (!(log_odds >= 0 && log_odds <= MAX_LOG_ODDS))  // also false for NaN
        throw std::invalid_argument(what() + " is " + std::to_string(log_odds) +
                                    "; expected a finite log-odds weight in [0, " +
                                    std::to_string((int)MAX_LOG_ODDS) + "]");
    return (pm::weight_int)std::lround(log_odds * WEIGHT_SCALE) * 2;
}

// The four stored copies of one edge's weight: both directions, in the flooder's graph and in the
// search graph (the search graph finds the edges of a matched path). Boundary edges have two.
struct EdgeSlots {
    pm::weight_int* slots[4];
    int count;
    void set(pm::weight_int w) {
        for (int k = 0; k < count; k++)
            *slots[k] = w;
    }
    pm::weight_int get() const {
        return *slots[0];
    }
};

class WeightedMatching {
   public:
    WeightedMatching(
        size_t num_detectors,
        py::array_t<int64_t, py::array::c_style | py::array::forcecast> edge_detectors,
        py::array_t<uint64_t, py::array::c_style | py::array::forcecast> edge_observable_masks,
        py::array_t<double, py::array::c_style | py::array::forcecast> weights,
        py::array_t<int64_t, py::array::c_style | py::array::forcecast> correlation_indptr,
        py::array_t<int64_t, py::array::c_style | py::array::forcecast> correlation_indices,
        py::array_t<double, py::array::c_style | py::array::forcecast> correlation_weights)
        : num_detectors_(num_detectors), num_edges_(check_edges(edge_detectors)) {
        if ((size_t)edge_observable_masks.size() != num_edges_ || (size_t)weights.size() != num_edges_)
            throw std::invalid_argument(
                "expected one observable mask and one weight per edge (" + std::to_string(num_edges_) + "), got " +
                std::to_string(edge_observable_masks.size()) + " and " + std::to_string(weights.size()));
        auto pairs = edge_detectors.unchecked<2>();
        auto masks = edge_observable_masks.unchecked<1>();
        auto w = weights.unchecked<1>();
        pm::MatchingGraph graph(num_detectors, 64);
        pm::SearchGraph search(num_detectors);
        for (size_t e = 0; e < num_edges_; e++) {
            int64_t a = pairs(e, 0), b = pairs(e, 1);
            if (a < 0 || (size_t)a >= num_detectors || b >= (int64_t)num_detectors || b < -1 || a == b)
                throw std::invalid_argument(
                    "edge " + std::to_string(e) + " joins detectors (" + std::to_string(a) + ", " +
                    std::to_string(b) + "); expected 0 <= a < " + std::to_string(num_detectors) +
                    " and b in [-1, " + std::to_string(num_detectors) + "), b != a (-1: the boundary)");
            std::vector<size_t> observables;
            for (size_t k = 0; k < 64; k++)
                if ((masks(e) >> k) & 1)
                    observables.push_back(k);
            auto weight = (pm::signed_weight_int)to_weight_int(w(e), [&] { return "weight of edge " + std::to_string(e); });
            if (b < 0) {
                graph.add_boundary_edge(a, weight, observables);
                search.add_boundary_edge(a, weight, observables);
            } else {
                graph.add_edge(a, b, weight, observables);
                search.add_edge(a, b, weight, observables);
            }
        }
        mwpm_ = pm::Mwpm(pm::GraphFlooder(std::move(graph)), pm::SearchFlooder(std::move(search)));
        locate_edge_slots(pairs);

        auto indptr = correlation_indptr.unchecked<1>();
        has_correlations_ = indptr.shape(0) > 0;
        if (has_correlations_) {
            if ((size_t)indptr.shape(0) != num_edges_ + 1)
                throw std::invalid_argument("correlations: expected a CSR indptr of length edges + 1 = " +
                                            std::to_string(num_edges_ + 1));
            auto indices = correlation_indices.unchecked<1>();
            auto cw = correlation_weights.unchecked<1>();
            if (indices.shape(0) != cw.shape(0) || indptr(0) != 0 || indptr(num_edges_) != indices.shape(0))
                throw std::invalid_argument(
                    "correlations: expected a CSR matrix with indptr[0] = 0 and indptr[-1] = len(indices) = "
                    "len(weights), got " + std::to_string(indptr(0)) + ", " + std::to_string(indptr(num_edges_)) +
                    ", " + std::to_string(indices.shape(0)) + " and " + std::to_string(cw.shape(0)));
            for (size_t e = 0; e < num_edges_; e++)
                if (indptr(e + 1) < indptr(e))
                    throw std::invalid_argument("correlations: expected a non-decreasing CSR indptr, got indptr[" +
                                                std::to_string(e + 1) + "] < indptr[" + std::to_string(e) + "]");
            correlation_indptr_.assign(indptr.data(0), indptr.data(0) + indptr.shape(0));
            for (py::ssize_t k = 0; k < indices.shape(0); k++) {
                if (indices(k) < 0 || (size_t)indices(k) >= num_edges_)
                    throw std::invalid_argument("correlations: partner edge index " + std::to_string(indices(k)) +
                                                " at " + std::to_string(k) + "; expected 0 <= index < " +
                                                std::to_string(num_edges_));
                correlation_partners_.push_back((uint32_t)indices(k));
                correlation_weights_.push_back(
                    to_weight_int(cw(k), [&] { return "correlations: conditional weight " + std::to_string(k); }));
            }
        }
        flipped_.assign(num_edges_, 0);
    }

    size_t num_detectors() const {
        return num_detectors_;
    }
    size_t num_edges() const {
        return num_edges_;
    }

    /// bool/uint8 [S, N] events, float32 [S, E] per-shot log-odds weights -> uint64 [S] observable masks.
    py::array_t<uint64_t> decode_batch(
        py::array_t<uint8_t, py::array::c_style | py::array::forcecast> events,
        py::array_t<float, py::array::c_style | py::array::forcecast> weights) {
        py::array_t<uint64_t> result(check_batch(events, weights));
        auto out = result.mutable_unchecked<1>();
        each_shot(events, weights, [&](size_t s, const std::vector<uint64_t>& defects, const float* shot_weights) {
            out(s) = defects.empty() ? 0 : decode_shot(s, defects, shot_weights);
        });
        return result;
    }

    /// Like decode_batch, but the answer is the matching itself: uint8 [S, E], 1 where the final
    /// matching (after the correlated pass, if any) uses the edge.
    py::array_t<uint8_t> decode_edges_batch(
        py::array_t<uint8_t, py::array::c_style | py::array::forcecast> events,
        py::array_t<float, py::array::c_style | py::array::forcecast> weights) {
        py::array_t<uint8_t> result({check_batch(events, weights), num_edges_});
        auto out = result.mutable_unchecked<2>();
        std::vector<uint32_t> edges;
        each_shot(events, weights, [&](size_t s, const std::vector<uint64_t>& defects, const float* shot_weights) {
            for (size_t e = 0; e < num_edges_; e++)
                out(s, e) = 0;
            if (defects.empty())
                return;
            RestoreWeights restore{*this};
            try {
                set_shot_weights(defects, shot_weights);
                matched_edges(defects, edges);
            } catch (const std::invalid_argument& error) {
                throw std::invalid_argument("shot " + std::to_string(s) + " (" + std::to_string(defects.size()) +
                                            " detection events): " + error.what());
            }
            for (auto edge : edges)
                out(s, edge) = 1;
        });
        return result;
    }

    /// Per-shot weights that are an affine function of one network logit per edge, and the answer
    /// as parities: edge e weighs clip(offset[e] + scale[e] * logits[s, logit_of[e]], 0, max_weight)
    /// in shot s (offset[e] alone where logit_of[e] < 0), computed only for the edges the shot
    /// touches; returns uint8 [S, B], per shot the XOR of the rows of ``answers`` (uint8 [E, B],
    /// e.g. bit-packed) of the edges of its matching. One call does what decode_edges_batch on a
    /// dense [S, E] weight array and a product with the answers would, without the dense arrays.
    py::array_t<uint8_t> decode_mixed_batch(
        py::array_t<uint8_t, py::array::c_style | py::array::forcecast> events,
        py::array_t<float, py::array::c_style | py::array::forcecast> logits,
        py::array_t<int64_t, py::array::c_style | py::array::forcecast> logit_of,
        py::array_t<float, py::array::c_style | py::array::forcecast> offset,
        py::array_t<float, py::array::c_style | py::array::forcecast> scale, double max_weight,
        py::array_t<uint8_t, py::array::c_style | py::array::forcecast> answers) {
        size_t shots = check_events(events);
        if (logits.ndim() != 2 || (size_t)logits.shape(0) != shots)
            throw std::invalid_argument("expected logits of shape [" + std::to_string(shots) +
                                        ", logits per shot] (one row per shot)");
        if ((size_t)logit_of.size() != num_edges_ || (size_t)offset.size() != num_edges_ ||
            (size_t)scale.size() != num_edges_)
            throw std::invalid_argument("expected logit_of, offset and scale of " + std::to_string(num_edges_) +
                                        " entries (one per edge)");
        if (answers.ndim() != 2 || (size_t)answers.shape(0) != num_edges_)
            throw std::invalid_argument("expected answers of shape [" + std::to_string(num_edges_) + ", bytes]");
        const int64_t* index = logit_of.data();
        for (size_t e = 0; e < num_edges_; e++)
            if (index[e] >= logits.shape(1))
                throw std::invalid_argument("logit_of[" + std::to_string(e) + "] is " + std::to_string(index[e]) +
                                            "; expected < " + std::to_string(logits.shape(1)) + " logits per shot");
        const float *off = offset.data(), *sc = scale.data();
        const uint8_t* rows = answers.data();
        size_t width = answers.shape(1);
        py::array_t<uint8_t> result({shots, width});
        uint8_t* out = result.mutable_data();
        std::fill(out, out + result.size(), 0);
        std::vector<uint32_t> edges;
        each_shot(events, logits, [&](size_t s, const std::vector<uint64_t>& defects, const float* shot_logits) {
            if (defects.empty())
                return;
            RestoreWeights restore{*this};
            try {
                set_shot_weights(defects, [&](uint32_t e) {
                    double w = index[e] < 0 ? off[e] : off[e] + sc[e] * (double)shot_logits[index[e]];
                    if (!std::isfinite(w))
                        throw std::invalid_argument(
                            "weight of edge " + std::to_string(e) + " is " + std::to_string(w) + " (offset " +
                            std::to_string(off[e]) + " + scale " + std::to_string(sc[e]) + " x logit " +
                            (index[e] < 0 ? std::string("none") : std::to_string(shot_logits[index[e]])) + ")");
                    return std::min(std::max(w, 0.0), max_weight);
                });
                matched_edges(defects, edges);
            } catch (const std::invalid_argument& error) {
                throw std::invalid_argument("shot " + std::to_string(s) + " (" + std::to_string(defects.size()) +
                                            " detection events): " + error.what());
            }
            for (auto edge : edges)
                for (size_t b = 0; b < width; b++)
                    out[s * width + b] ^= rows[edge * width + b];
        });
        return result;
    }

   private:
    /// The number of shots, once the events are known to be [S, N].
    size_t check_events(const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& events) const {
        if (events.ndim() != 2 || (size_t)events.shape(1) != num_detectors_)
            throw std::invalid_argument("expected events of shape [shots, " + std::to_string(num_detectors_) + "]");
        return events.shape(0);
    }

    /// The number of shots, once the events and weights are known to be [S, N] and [S, E].
    size_t check_batch(const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& events,
                       const py::array_t<float, py::array::c_style | py::array::forcecast>& weights) const {
        check_events(events);
        if (weights.ndim() != 2 || weights.shape(0) != events.shape(0) || (size_t)weights.shape(1) != num_edges_)
            throw std::invalid_argument("expected weights of shape [" + std::to_string(events.shape(0)) + ", " +
                                        std::to_string(num_edges_) + "] (one row of edge weights per shot)");
        return events.shape(0);
    }

    /// Calls answer(shot, its detection events, its row of weights or logits) for every shot, the GIL released and
    /// the matcher locked (one batch at a time).
    template <typename Answer>
    void each_shot(const py::array_t<uint8_t, py::array::c_style | py::array::forcecast>& events,
                   const py::array_t<float, py::array::c_style | py::array::forcecast>& weights, Answer&& answer) {
        auto ev = events.unchecked<2>();
        auto w = weights.unchecked<2>();
        py::gil_scoped_release release;
        std::lock_guard<std::mutex> lock(mutex_);
        std::vector<uint64_t> defects;
        for (size_t s = 0; s < (size_t)ev.shape(0); s++) {
            defects.clear();
            for (size_t d = 0; d < num_detectors_; d++)
                if (ev(s, d))
                    defects.push_back(d);
            answer(s, defects, w.data(s, 0));
        }
    }

    static size_t check_edges(const py::array_t<int64_t, py::array::c_style | py::array::forcecast>& edges) {
        if (edges.ndim() != 2 || edges.shape(1) != 2)
            throw std::invalid_argument("expected edge detectors of shape [edges, 2]");
        return edges.shape(0);
    }

    void locate_edge_slots(const py::detail::unchecked_reference<int64_t, 2>& pairs) {
        auto& nodes = mwpm_.flooder.graph.nodes;
        auto& search_nodes = mwpm_.search_flooder.graph.nodes;
        slots_.resize(num_edges_);
        search_edge_ids_.resize(num_detectors_);
        for (size_t d = 0; d < num_detectors_; d++)
            search_edge_ids_[d].assign(search_nodes[d].neighbors.size(), -1);
        incident_.resize(num_detectors_);
        for (size_t e = 0; e < num_edges_; e++) {
            int64_t a = pairs(e, 0), b = pairs(e, 1);
            pm::DetectorNode* far = b < 0 ? nullptr : &nodes[b];
            pm::SearchDetectorNode* search_far = b < 0 ? nullptr : &search_nodes[b];
            size_t ia = nodes[a].index_of_neighbor(far);
            size_t sa = search_nodes[a].index_of_neighbor(search_far);
            if (search_edge_ids_[a][sa] != -1)
                throw std::invalid_argument("edge " + std::to_string(e) + " repeats the detector pair (" +
                                            std::to_string(a) + ", " + std::to_string(b) + ")");
            EdgeSlots& slot = slots_[e];
            slot.count = 0;
            slot.slots[slot.count++] = &nodes[a].neighbor_weights[ia];
            slot.slots[slot.count++] = &search_nodes[a].neighbor_weights[sa];
            search_edge_ids_[a][sa] = (int64_t)e;
            incident_[a].push_back((uint32_t)e);
            if (b >= 0) {
                size_t ib = nodes[b].index_of_neighbor(&nodes[a]);
                size_t sb = search_nodes[b].index_of_neighbor(&search_nodes[a]);
                slot.slots[slot.count++] = &nodes[b].neighbor_weights[ib];
                slot.slots[slot.count++] = &search_nodes[b].neighbor_weights[sb];
                search_edge_ids_[b][sb] = (int64_t)e;
                incident_[b].push_back((uint32_t)e);
            }
        }
    }

    void set_weight(uint32_t edge, pm::weight_int weight) {
        saved_.emplace_back(edge, slots_[edge].get());
        slots_[edge].set(weight);
    }

    void restore_weights() {
        for (auto it = saved_.rbegin(); it != saved_.rend(); ++it)
            slots_[it->first].set(it->second);
        saved_.clear();
    }

    /// Grows the regions of the detection events until every one is matched (or at the boundary).
    void flood(const std::vector<uint64_t>& defects) {
        mwpm_.flooder.queue.cur_time = 0;
        for (auto d : defects)
            mwpm_.create_detection_event(&mwpm_.flooder.graph.nodes[d]);
        while (true) {
            auto event = mwpm_.flooder.run_until_next_mwpm_notification();
            if (event.event_type == pm::NO_EVENT)
                break;
            mwpm_.process_event(event);
        }
        if (mwpm_.node_arena.allocated.size() != mwpm_.node_arena.available.size()) {
            mwpm_.reset();
            throw std::invalid_argument("no perfect matching exists: a connected component without a boundary "
                                        "has an odd number of detection events");
        }
    }

    pm::obs_int matched_observables(const std::vector<uint64_t>& defects) {
        flood(defects);
        pm::MatchingResult result;
        for (auto d : defects) {
            auto& node = mwpm_.flooder.graph.nodes[d];
            if (node.region_that_arrived)
                result += mwpm_.shatter_blossom_and_extract_matches(node.region_that_arrived_top);
        }
        return result.obs_mask;
    }

    /// The edges of the matching: the shortest paths between matched pairs, edges crossed twice cancelling.
    void matched_edges(const std::vector<uint64_t>& defects, std::vector<uint32_t>& edges) {
        flood(defects);
        auto& match_edges = mwpm_.flooder.match_edges;
        match_edges.clear();
        for (auto d : defects) {
            auto& node = mwpm_.flooder.graph.nodes[d];
            if (node.region_that_arrived)
                mwpm_.shatter_blossom_and_extract_match_edges(node.region_that_arrived_top, match_edges);
        }
        auto* first = &mwpm_.flooder.graph.nodes[0];
        auto* search_first = &mwpm_.search_flooder.graph.nodes[0];
        std::vector<uint32_t> touched;
        for (const auto& match : match_edges) {
            size_t from = match.loc_from - first;
            size_t to = match.loc_to ? (size_t)(match.loc_to - first) : SIZE_MAX;
            mwpm_.search_flooder.iter_edges_on_shortest_path_from_middle(from, to, [&](const pm::SearchGraphEdge& e) {
                auto edge = (uint32_t)search_edge_ids_[e.detector_node - search_first][e.neighbor_index];
                flipped_[edge] ^= 1;
                touched.push_back(edge);
            });
        }
        edges.clear();
        for (auto edge : touched) {
            if (flipped_[edge])
                edges.push_back(edge);
            flipped_[edge] = 0;
        }
    }

    /// Puts a shot's weights back however the shot ends (an answer or an error).
    struct RestoreWeights {
        WeightedMatching& matching;
        ~RestoreWeights() {
            matching.restore_weights();
        }
    };

    pm::obs_int decode_shot(size_t shot, const std::vector<uint64_t>& defects, const float* shot_weights) {
        RestoreWeights restore{*this};
        try {
            return match_shot(defects, shot_weights);
        } catch (const std::invalid_argument& error) {
            throw std::invalid_argument("shot " + std::to_string(shot) + " (" + std::to_string(defects.size()) +
                                        " detection events): " + error.what());
        }
    }

    pm::obs_int match_shot(const std::vector<uint64_t>& defects, const float* shot_weights) {
        set_shot_weights(defects, shot_weights);
        return matched_observables(defects);
    }

    /// The shot's weights on the edges touching its detection events, then (with correlations)
    /// the conditional weights of the edges correlated with its first matching.
    void set_shot_weights(const std::vector<uint64_t>& defects, const float* shot_weights) {
        set_shot_weights(defects, [&](uint32_t edge) { return (double)shot_weights[edge]; });
    }

    /// As above, each touched edge's log-odds weight given by weight_of(edge).
    template <typename WeightOf>
    void set_shot_weights(const std::vector<uint64_t>& defects, WeightOf&& weight_of) {
        for (auto d : defects)
            for (auto edge : incident_[d])
                set_weight(edge, to_weight_int(weight_of(edge), [&] { return "weight of edge " + std::to_string(edge); }));
        if (has_correlations_) {
            matched_edges(defects, first_matching_);
            for (auto edge : first_matching_)
                for (int64_t k = correlation_indptr_[edge]; k < correlation_indptr_[edge + 1]; k++)
                    if (correlation_weights_[k] < slots_[correlation_partners_[k]].get())
                        set_weight(correlation_partners_[k], correlation_weights_[k]);
        }
    }

    size_t num_detectors_;
    size_t num_edges_;
    pm::Mwpm mwpm_;
    std::vector<EdgeSlots> slots_;
    std::vector<std::vector<int64_t>> search_edge_ids_;  // [detector][search neighbor index] -> edge
    std::vector<std::vector<uint32_t>> incident_;         // [detector] -> its edges
    bool has_correlations_ = false;
    std::vector<int64_t> correlation_indptr_;
    std::vector<uint32_t> correlation_partners_;
    std::vector<pm::weight_int> correlation_weights_;
    std::vector<std::pair<uint32_t, pm::weight_int>> saved_;
    std::vector<uint8_t> flipped_;
    std::vector<uint32_t> first_matching_;
    std::mutex mutex_;  // one batch at a time: decoding mutates the graph's weights and the matcher's state
};

}  // namespace

void register_window_loop(py::module_& m);  // decoder/window_loop.cc

PYBIND11_MODULE(_weighted_matching, m) {
    m.doc() = "Minimum-weight perfect matching with per-shot edge weights, and the sliding-window loop "
              "(PyMatching's sparse blossom).";
    py::class_<WeightedMatching>(m, "WeightedMatching")
        .def(py::init<size_t, py::array_t<int64_t, py::array::c_style | py::array::forcecast>,
                      py::array_t<uint64_t, py::array::c_style | py::array::forcecast>,
                      py::array_t<double, py::array::c_style | py::array::forcecast>,
                      py::array_t<int64_t, py::array::c_style | py::array::forcecast>,
                      py::array_t<int64_t, py::array::c_style | py::array::forcecast>,
                      py::array_t<double, py::array::c_style | py::array::forcecast>>(),
             py::arg("num_detectors"), py::arg("edge_detectors"), py::arg("edge_observable_masks"), py::arg("weights"),
             py::arg("correlation_indptr"), py::arg("correlation_indices"), py::arg("correlation_weights"))
        .def_property_readonly("num_detectors", &WeightedMatching::num_detectors)
        .def_property_readonly("num_edges", &WeightedMatching::num_edges)
        .def("decode_batch", &WeightedMatching::decode_batch, py::arg("events"), py::arg("weights"))
        .def("decode_edges_batch", &WeightedMatching::decode_edges_batch, py::arg("events"), py::arg("weights"))
        .def("decode_mixed_batch", &WeightedMatching::decode_mixed_batch, py::arg("events"), py::arg("logits"),
             py::arg("logit_of"), py::arg("offset"), py::arg("scale"), py::arg("max_weight"), py::arg("answers"));
    register_window_loop(m);
}
