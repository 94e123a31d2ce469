// One block of experiments' sliding windows, decoded in C++: the loop of decoder/windowed.py's
// WindowedExperiments (push, finish, _decode) with no Python per window.
//
// WindowMatching is one window's matching graph, built by PyMatching's own driver (the DEM's
// flattened error instructions, handed over through decoder/pymatching_stim/stim.h): edges merged,
// weights discretised and, in correlated mode, implied weights set exactly as
// pymatching.Matching.from_detector_error_model does, and decoded by PyMatching's
// decode_detection_events, so its answers are pymatching.Matching's, bit for bit.
//
// WindowStream holds a block's uncommitted slices (one window at most per experiment) and its Pauli
// frame. push() takes any number of slices; each time a window's slices are all held, every
// experiment's window is matched, the committed edges' logical flips join the frame, the carried
// buffer detectors they reach are flipped, and the window moves `commit` slices on.

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <bit>
#include <cstring>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "pymatching/sparse_blossom/driver/mwpm_decoding.h"
#include "pymatching/sparse_blossom/driver/user_graph.h"

namespace py = pybind11;

namespace {

using Int64s = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;
using Bytes = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>;

std::string str(size_t n) {
    return std::to_string(n);
}

/// The flat DEM of an error-instruction walk: probabilities [E], starts [E + 1] into targets
/// (detector d: d; separator: -1; observable k: -2 - k).
stim::DetectorErrorModel flat_dem(size_t num_detectors, size_t num_observables,
                                  const py::array_t<double, py::array::c_style | py::array::forcecast>& probabilities,
                                  const Int64s& starts, const Int64s& targets) {
    stim::DetectorErrorModel dem;
    dem.num_detectors = num_detectors;
    dem.num_observables = num_observables;
    size_t errors = probabilities.size();
    if (starts.ndim() != 1 || (size_t)starts.size() != errors + 1)
        throw std::invalid_argument("expected starts of length errors + 1 = " + str(errors + 1) + ", got " +
                                    str(starts.size()));
    auto p = probabilities.unchecked<1>();
    auto s = starts.unchecked<1>();
    auto t = targets.unchecked<1>();
    if (s(0) != 0 || s(errors) != t.shape(0))
        throw std::invalid_argument("expected starts[0] = 0 and starts[-1] = len(targets) = " + str(t.shape(0)));
    for (size_t e = 0; e < errors; e++) {
        if (s(e + 1) < s(e))
            throw std::invalid_argument("expected non-decreasing starts, got starts[" + str(e + 1) + "] < starts[" +
                                        str(e) + "]");
        dem.probabilities.push_back(p(e));
        dem.starts.push_back(s(e));
    }
    dem.starts.push_back(s(errors));
    for (py::ssize_t k = 0; k < t.shape(0); k++) {
        int64_t code = t(k);
        if (code >= (int64_t)num_detectors || code < -2 - (int64_t)num_observables + 1)
            throw std::invalid_argument("target " + str(k) + " is " + std::to_string(code) + "; expected a detector in [0, " +
                                        str(num_detectors) + "), -1 (a separator) or an observable -2 - k, k < " +
                                        str(num_observables));
        dem.targets.push_back({code});
    }
    return dem;
}

class WindowMatching {
   public:
    /// A window's graph from its DEM's error instructions (see flat_dem): ``num_detectors`` the
    /// window's detectors and its open top (the last one), ``num_observables`` the logical
    /// observables then one per carried detector (``carried``: window detector indices).
    WindowMatching(size_t num_detectors, size_t num_observables,
                   py::array_t<double, py::array::c_style | py::array::forcecast> probabilities, Int64s starts,
                   Int64s targets, Int64s carried, bool correlations)
        : num_detectors_(num_detectors), num_observables_(num_observables), correlations_(correlations) {
        if (num_detectors < 1)
            throw std::invalid_argument("a window has at least its open top as a detector, got 0 detectors");
        auto c = carried.unchecked<1>();
        if ((size_t)c.shape(0) > num_observables)
            throw std::invalid_argument("expected at most num_observables = " + str(num_observables) +
                                        " carried detectors, got " + str(c.shape(0)));
        for (py::ssize_t j = 0; j < c.shape(0); j++) {
            if (c(j) < 0 || c(j) >= (int64_t)num_detectors - 1)
                throw std::invalid_argument("carried detector " + std::to_string(c(j)) + "; expected 0 <= d < " +
                                            str(num_detectors - 1) + " (the window's detectors)");
            carried_.push_back((size_t)c(j));
        }
        logical_ = num_observables - carried_.size();
        auto dem = flat_dem(num_detectors, num_observables, probabilities, starts, targets);
        auto graph = pm::detector_error_model_to_user_graph(dem, correlations, pm::NUM_DISTINCT_WEIGHTS);
        mwpm_ = graph.to_mwpm(pm::NUM_DISTINCT_WEIGHTS, correlations);
        wide_.resize(num_observables);
    }

    size_t num_detectors() const {
        return num_detectors_;
    }
    size_t num_observables() const {
        return num_observables_;
    }
    /// The window's detectors, its open top excluded.
    size_t window_detectors() const {
        return num_detectors_ - 1;
    }
    size_t logical() const {
        return logical_;
    }
    const std::vector<size_t>& carried() const {
        return carried_;
    }
    std::mutex& mutex() {
        return mutex_;
    }

    /// uint8 [S, num_detectors] -> bool [S, num_observables], as pymatching.Matching.decode_batch.
    py::array_t<bool> decode_batch(Bytes syndromes, bool correlations) {
        if (syndromes.ndim() != 2 || (size_t)syndromes.shape(1) != num_detectors_)
            throw std::invalid_argument("expected syndromes of shape [shots, " + str(num_detectors_) + "]");
        check_mode(correlations);
        size_t shots = syndromes.shape(0);
        py::array_t<bool> result({shots, num_observables_});
        auto in = syndromes.unchecked<2>();
        auto* out = reinterpret_cast<uint8_t*>(result.mutable_data());
        std::memset(out, 0, shots * num_observables_);
        {
            py::gil_scoped_release release;
            std::lock_guard<std::mutex> lock(mutex_);
            std::vector<uint64_t> events;
            for (size_t s = 0; s < shots; s++) {
                events.clear();
                for (size_t d = 0; d < num_detectors_; d++)
                    if (in(s, d))
                        events.push_back(d);
                match(events, correlations, [&](size_t k) { out[s * num_observables_ + k] ^= 1; });
            }
        }
        return result;
    }

    void check_mode(bool correlations) const {
        if (correlations && !correlations_)
            throw std::invalid_argument("this window graph was built without correlations; it cannot decode with them");
    }

    /// Matches one shot's detection events; calls flip(k) for each observable k the matching flips.
    /// The caller holds mutex().
    template <typename Flip>
    void match(const std::vector<uint64_t>& events, bool correlations, Flip&& flip) {
        if (num_observables_ <= sizeof(pm::obs_int) * 8) {
            pm::obs_int mask = pm::decode_detection_events_for_up_to_64_observables(mwpm_, events, correlations).obs_mask;
            for (; mask; mask &= mask - 1)
                flip((size_t)std::countr_zero(mask));
        } else {
            std::fill(wide_.begin(), wide_.end(), 0);
            pm::total_weight_int weight = 0;
            pm::decode_detection_events(mwpm_, events, wide_.data(), weight, correlations);
            for (size_t k = 0; k < num_observables_; k++)
                if (wide_[k])
                    flip(k);
        }
    }

   private:
    size_t num_detectors_, num_observables_, logical_;
    bool correlations_;
    std::vector<size_t> carried_;
    pm::Mwpm mwpm_;
    std::vector<uint8_t> wide_;  // the answer of a window with more than 64 observables
    std::mutex mutex_;           // one batch at a time: matching uses the graph's scratch state
};

using Window = std::shared_ptr<WindowMatching>;

class WindowStream {
   public:
    WindowStream(Window first, Window bulk, size_t experiments, size_t first_slice, size_t bulk_slice,
                 size_t final_slice, size_t commit, size_t span, size_t lookahead, bool correlations)
        : first_(std::move(first)), bulk_(std::move(bulk)), experiments_(experiments), first_slice_(first_slice),
          bulk_slice_(bulk_slice), final_slice_(final_slice), commit_(commit), span_(span), lookahead_(lookahead),
          correlations_(correlations) {
        if (commit < 1 || span <= commit)
            throw std::invalid_argument("expected 1 <= commit < span, got commit " + str(commit) + ", span " + str(span));
        check_window(*first_, first_slice + (span - 1) * bulk_slice, "first");
        check_window(*bulk_, span * bulk_slice, "bulk");
        logical_ = first_->logical();
        row_ = (span + lookahead) * std::max({first_slice, bulk_slice, final_slice});
        buffer_.assign(experiments * row_, 0);
        frame_ = py::array_t<bool>({experiments, logical_});
        frame_data_ = reinterpret_cast<uint8_t*>(frame_.mutable_data());  // written with the GIL released
        std::memset(frame_data_, 0, experiments * logical_);
    }

    /// The next ``count`` slices, uint8 [S, their detectors] (Stim's order): returns the XOR of
    /// the flips committed by the windows they complete, bool [S, O], or None if none was.
    py::object push(Bytes events, size_t count) {
        check_open();
        size_t width = 0;
        for (size_t k = 0; k < count; k++)
            width += next_slice() + k == 0 ? first_slice_ : bulk_slice_;
        check_rows(events, width, "the next " + str(count) + " slices");
        py::array_t<bool> update({experiments_, logical_});
        auto* flips = reinterpret_cast<uint8_t*>(update.mutable_data());
        std::memset(flips, 0, experiments_ * logical_);
        bool completed = false;
        {
            py::gil_scoped_release release;
            const uint8_t* in = events.data();
            size_t offset = 0;
            for (size_t k = 0; k < count; k++) {
                size_t size = next_slice() == 0 ? first_slice_ : bulk_slice_;
                append(in + offset, width, size);
                offset += size;
                if (held_slices_ >= span_ + lookahead_) {
                    decode(committed_ == 0 ? *first_ : *bulk_, commit_, flips);
                    completed = true;
                }
            }
        }
        return completed ? py::object(update) : py::none();
    }

    /// The final data-measurement slice, uint8 [S, final slice]: decodes the windows a lookahead
    /// held back; then decode_rest() with the final window of held_slices slices.
    void push_final(Bytes events) {
        check_open();
        check_rows(events, final_slice_, "the final slice");
        py::gil_scoped_release release;
        append(events.data(), final_slice_, final_slice_);
        while (held_slices_ > span_)
            decode(committed_ == 0 ? *first_ : *bulk_, commit_, nullptr);
        final_pushed_ = true;
    }

    /// Decodes every held slice with ``window`` (the final window of held_slices slices): returns the frame.
    py::array_t<bool> decode_rest(Window window) {
        if (finished_)
            throw std::invalid_argument("these experiments are finished; open new ones");
        if (!final_pushed_)
            throw std::invalid_argument("push_final() comes before decode_rest()");
        if (window->window_detectors() != held_detectors_ || !window->carried().empty() ||
            window->logical() != logical_)
            throw std::invalid_argument("expected a final window of " + str(held_detectors_) + " detectors, " +
                                        str(logical_) + " observables and none carried; got " +
                                        str(window->window_detectors()) + ", " + str(window->logical()) + " and " +
                                        str(window->carried().size()));
        window->check_mode(correlations_);
        {
            py::gil_scoped_release release;
            decode(*window, held_slices_, nullptr);
        }
        finished_ = true;
        return frame_;
    }

    py::array_t<bool> frame() const {
        return frame_;
    }
    size_t held_slices() const {
        return held_slices_;
    }
    size_t committed_slices() const {
        return committed_;
    }
    size_t next_slice() const {
        return committed_ + held_slices_;
    }
    /// Bytes of event data held: the slice buffer (one window per experiment, allocated whole) and the frame.
    size_t held_bytes() const {
        return buffer_.size() + experiments_ * logical_;
    }

   private:
    void check_window(const WindowMatching& window, size_t detectors, const char* name) const {
        if (window.window_detectors() != detectors)
            throw std::invalid_argument(std::string("expected a ") + name + " window of " + str(detectors) +
                                        " detectors, got " + str(window.window_detectors()));
        window.check_mode(correlations_);
        for (size_t d : window.carried())
            if (d < detectors - (span_ - commit_) * bulk_slice_)
                throw std::invalid_argument(std::string("the ") + name + " window carries detector " + str(d) +
                                            ", which it commits");
    }

    void check_open() const {
        if (finished_)
            throw std::invalid_argument("these experiments are finished; open new ones");
        if (final_pushed_)
            throw std::invalid_argument("the final slice is in; decode_rest() is all that is left");
    }

    void check_rows(const Bytes& events, size_t width, const std::string& what) const {
        if (events.ndim() != 2 || (size_t)events.shape(0) != experiments_ || (size_t)events.shape(1) != width)
            throw std::invalid_argument("expected " + what + " as uint8 [" + str(experiments_) + ", " + str(width) + "]");
    }

    /// Appends one slice of ``size`` detectors, at ``in`` in rows of ``width``, to every experiment.
    void append(const uint8_t* in, size_t width, size_t size) {
        for (size_t s = 0; s < experiments_; s++)
            std::memcpy(&buffer_[s * row_ + held_detectors_], in + s * width, size);
        held_detectors_ += size;
        held_slices_ += 1;
    }

    /// Matches ``window`` over the first held slices of every experiment and commits the first
    /// ``commit`` of them (their flips also XORed into ``flips`` [S, O] if given).
    void decode(WindowMatching& window, size_t commit, uint8_t* flips) {
        size_t done = committed_ == 0 ? first_slice_ + (commit - 1) * bulk_slice_ : commit * bulk_slice_;
        if (commit == held_slices_)
            done = held_detectors_;
        size_t detectors = window.window_detectors();
        uint8_t* frame = frame_data_;
        const auto& carried = window.carried();
        std::lock_guard<std::mutex> lock(window.mutex());
        for (size_t s = 0; s < experiments_; s++) {
            uint8_t* row = &buffer_[s * row_];
            events_.clear();
            for (size_t d = 0; d < detectors; d++)
                if (row[d])
                    events_.push_back(d);
            window.match(events_, correlations_, [&](size_t k) {
                if (k < logical_) {
                    frame[s * logical_ + k] ^= 1;
                    if (flips)
                        flips[s * logical_ + k] ^= 1;
                } else {
                    row[carried[k - logical_]] ^= 1;
                }
            });
            std::memmove(row, row + done, held_detectors_ - done);
        }
        held_detectors_ -= done;
        held_slices_ -= commit;
        committed_ += commit;
    }

    Window first_, bulk_;
    size_t experiments_, first_slice_, bulk_slice_, final_slice_, commit_, span_, lookahead_;
    bool correlations_;
    size_t logical_ = 0;
    size_t row_ = 0;              // bytes per experiment in buffer_: the most slices ever held
    std::vector<uint8_t> buffer_;  // [S, row_]: each experiment's held slices, carried flips applied
    size_t held_slices_ = 0, held_detectors_ = 0, committed_ = 0;
    bool final_pushed_ = false, finished_ = false;
    py::array_t<bool> frame_;  // [S, O] committed logical flips, shared with Python
    uint8_t* frame_data_ = nullptr;
    std::vector<uint64_t> events_;
};

}  // namespace

void register_window_loop(py::module_& m) {
    py::class_<WindowMatching, std::shared_ptr<WindowMatching>>(m, "WindowMatching")
        .def(py::init<size_t, size_t, py::array_t<double, py::array::c_style | py::array::forcecast>, Int64s, Int64s,
                      Int64s, bool>(),
             py::arg("num_detectors"), py::arg("num_observables"), py::arg("probabilities"), py::arg("starts"),
             py::arg("targets"), py::arg("carried"), py::arg("correlations"))
        .def_property_readonly("num_detectors", &WindowMatching::num_detectors)
        .def_property_readonly("num_observables", &WindowMatching::num_observables)
        .def("decode_batch", &WindowMatching::decode_batch, py::arg("syndromes"), py::arg("correlations"));
    py::class_<WindowStream>(m, "WindowStream")
        .def(py::init<Window, Window, size_t, size_t, size_t, size_t, size_t, size_t, size_t, bool>(),
             py::arg("first"), py::arg("bulk"), py::arg("experiments"), py::arg("first_slice"), py::arg("bulk_slice"),
             py::arg("final_slice"), py::arg("commit"), py::arg("span"), py::arg("lookahead"), py::arg("correlations"))
        .def("push", &WindowStream::push, py::arg("events"), py::arg("count"))
        .def("push_final", &WindowStream::push_final, py::arg("events"))
        .def("decode_rest", &WindowStream::decode_rest, py::arg("window"))
        .def_property_readonly("frame", &WindowStream::frame)
        .def_property_readonly("held_slices", &WindowStream::held_slices)
        .def_property_readonly("committed_slices", &WindowStream::committed_slices)
        .def_property_readonly("next_slice", &WindowStream::next_slice)
        .def_property_readonly("held_bytes", &WindowStream::held_bytes);
}
