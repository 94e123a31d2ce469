"""#25 item 2: the first stream's first round trip to an any-length d=9 model once health says SERVING,
against the steady state (the same experiment sent 20 more times: experiments differ up to 10x in
matching time at d=9), on a real loopback server. Run: .venv/bin/python results/first_stream_d9.py"""
import json, platform, sys, time
sys.path.insert(0, ".")
import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from decoder import CodeSpec
from decoder.events import pack_bits
from server.app import ServerConfig, start_server
from server.generated import decoder_pb2 as pb2, decoder_pb2_grpc as pb2_grpc
from server.models import family_model_name, load_models

if __name__ == "__main__":
    spec = CodeSpec(9, 9, 0.003)
    name = family_model_name(spec, correlated=True)
    started = time.perf_counter()
    running = start_server(ServerConfig(port=0), load_models(shipped=False, matching_specs=(spec,), any_length_specs=(spec,)))
    channel = grpc.insecure_channel(f"127.0.0.1:{running.port}")
    health, stub = health_pb2_grpc.HealthStub(channel), pb2_grpc.DecoderStub(channel)
    while health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status != health_pb2.HealthCheckResponse.SERVING:
        time.sleep(0.01)
    serving_after = time.perf_counter() - started
    windowed = running.service.models[name].windowed
    rounds = 2 * windowed.span
    bits = CodeSpec(9, rounds, spec.p).circuit().compile_detector_sampler(seed=1).sample(21)
    bounds = np.cumsum([0, *windowed.slice_sizes(rounds)])

    def round_trip(shot: int) -> float:
        slices = [pack_bits(bits[shot: shot + 1, lo:hi])[0].tobytes() for lo, hi in zip(bounds[:-1], bounds[1:])]
        requests = [pb2.StreamRequest(rounds=[pb2.Round(experiment_id="e", model=name, events=s, last=i == len(slices) - 1)])
                    for i, s in enumerate(slices)]
        start = time.perf_counter()
        (answer,) = [r for response in stub.DecodeStream(iter(requests), timeout=30) for r in response.results]
        assert not answer.error, answer.error
        return time.perf_counter() - start

    first = round_trip(0)
    steady = [round_trip(0) for _ in range(20)]
    result = {"model": name, "rounds": rounds, "serving_after_s": serving_after, "first_ms": first * 1e3,
              "steady_median_ms": float(np.median(steady)) * 1e3, "first_vs_steady": first / float(np.median(steady)),
              "machine": f"{platform.node()} ({platform.machine()}), 2 cores, shared with other work",
              "command": "python results/first_stream_d9.py"}
    running.stop(grace=0)
    print(json.dumps(result, indent=1))
    json.dump(result, open("results/first-stream-d9.json", "w"), indent=1)
