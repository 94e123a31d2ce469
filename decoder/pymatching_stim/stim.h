// The part of Stim's C++ API that PyMatching's DEM driver (sparse_blossom/driver/user_graph.*,
// mwpm_decoding.*) reads, over a detector error model already flattened into arrays.
//
// PyMatching builds its matching graph from a stim::DetectorErrorModel: it walks the flattened
// error instructions (probability, targets: detectors, observables, separators). The window loop
// (decoder/window_loop.cc) gets that walk from Python (stim parses the DEM there) and hands it to
// PyMatching's own driver through this stand-in, so its graphs (merged edges, discretised weights,
// correlated mode's implied weights) are PyMatching's, without compiling Stim.

#ifndef NQEC_PYMATCHING_STIM_H
#define NQEC_PYMATCHING_STIM_H

#include <cassert>  // Stim's headers bring these to the driver
#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace stim {

/// One target of an error instruction, coded as one integer: a detector id (>= 0), a separator
/// (-1, the `^` of a decomposed error) or an observable id k (-2 - k).
struct DemTarget {
    int64_t code;
    bool is_relative_detector_id() const {
        return code >= 0;
    }
    bool is_observable_id() const {
        return code <= -2;
    }
    bool is_separator() const {
        return code == -1;
    }
    uint64_t val() const {
        return code >= 0 ? (uint64_t)code : (uint64_t)(-2 - code);
    }
    uint64_t raw_id() const {
        return val();
    }
};

template <typename T>
struct SpanRef {
    const T* ptr_start;
    const T* ptr_end;
    const T* begin() const {
        return ptr_start;
    }
    const T* end() const {
        return ptr_end;
    }
    size_t size() const {
        return ptr_end - ptr_start;
    }
    const T& operator[](size_t k) const {
        return ptr_start[k];
    }
};

struct DemInstruction {
    SpanRef<double> arg_data;
    SpanRef<DemTarget> target_data;
};

/// A flat DEM: error instruction e has probability probabilities[e] and targets
/// targets[starts[e] .. starts[e + 1]].
struct DetectorErrorModel {
    uint64_t num_detectors = 0;
    uint64_t num_observables = 0;
    std::vector<double> probabilities;
    std::vector<size_t> starts;
    std::vector<DemTarget> targets;

    uint64_t count_detectors() const {
        return num_detectors;
    }
    uint64_t count_observables() const {
        return num_observables;
    }
    template <typename Callback>
    void iter_flatten_error_instructions(const Callback& callback) const {
        for (size_t e = 0; e < probabilities.size(); e++)
            callback(DemInstruction{{&probabilities[e], &probabilities[e] + 1},
                                    {targets.data() + starts[e], targets.data() + starts[e + 1]}});
    }
};

}  // namespace stim

#endif  // NQEC_PYMATCHING_STIM_H
