// A closed-loop load generator for a Triton-served sequence model, in C++ on grpc++ (the library Triton's
// own clients use): SEQUENCES sequences of STEPS steps over STREAMS bidirectional ModelStreamInfer
// streams, one thread per stream. Sequence k rides stream k mod STREAMS; its next request leaves when
// the answer to its last one is back. It measures each request's latency and keeps each sequence's last
// answer; benchmarks/triton_load.py builds and runs it (its Python client costs the shared CPU more).
//
// usage: triton_grpc_load URL MODEL SEQUENCES STEPS STREAMS FIRST_ID TOKENS LATENCIES LAST_YS
//   TOKENS     SEQUENCES x STEPS int64 token ids (raw, row-major)
//   LATENCIES  written: SEQUENCES x STEPS float64 seconds
//   LAST_YS    written: SEQUENCES x OUTPUTS float32, each sequence's last y
// It prints the load's wall time in seconds, from the first request to the last answer.
// Exit 0 when every request was answered, 1 on an error answer or a broken stream (stderr says which),
// 2 on bad arguments.

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "grpc_service.grpc.pb.h"

using Clock = std::chrono::steady_clock;

namespace {

struct Load {
  std::string model;
  int64_t sequences = 0, steps = 0, streams = 0, first_id = 0;
  std::vector<int64_t> tokens;     // sequences x steps
  std::vector<double> latencies;   // sequences x steps
  std::vector<std::string> last_y; // each sequence's last y, raw float32 bytes
  std::atomic<bool> failed{false};  // every stream stops at the first failure
  std::mutex failure_lock;
  std::string failure;

  void fail(const std::string &why) {
    std::lock_guard<std::mutex> hold(failure_lock);
    if (failure.empty()) failure = why;
    failed = true;
  }
};

void set_step(inference::ModelInferRequest &request, const Load &load, int64_t k, int64_t t) {
  auto &params = *request.mutable_parameters();
  params["sequence_start"].set_bool_param(t == 0);
  params["sequence_end"].set_bool_param(t == load.steps - 1);
  const int64_t token = load.tokens[k * load.steps + t];
  request.mutable_raw_input_contents(0)->assign(reinterpret_cast<const char *>(&token), sizeof token);
}

// One stream: its sequences' first requests, then an answer read and that sequence's next request
// written until all of them have had every step answered.
void drive(inference::GRPCInferenceService::Stub *stub, Load *load, int64_t stream) {
  std::vector<int64_t> mine;
  for (int64_t k = stream; k < load->sequences; k += load->streams) mine.push_back(k);
  if (mine.empty()) return;
  std::vector<inference::ModelInferRequest> requests(load->sequences);
  std::vector<int64_t> step(load->sequences, 0);
  std::vector<Clock::time_point> sent(load->sequences);
  grpc::ClientContext context;
  auto call = stub->ModelStreamInfer(&context);
  for (int64_t k : mine) {
    auto &request = requests[k];
    request.set_model_name(load->model);
    request.set_id(std::to_string(k));
    auto *x = request.add_inputs();
    x->set_name("x");
    x->set_datatype("INT64");
    x->add_shape(1);
    x->add_shape(1);
    request.add_outputs()->set_name("y");
    (*request.mutable_parameters())["sequence_id"].set_int64_param(load->first_id + k);
    request.add_raw_input_contents();
    set_step(request, *load, k, 0);
    sent[k] = Clock::now();
    if (!call->Write(request)) {
      load->fail("stream " + std::to_string(stream) + ": the server closed it before its first requests");
      context.TryCancel();
      return;
    }
  }
  size_t finished = 0;
  bool broken = false;  // the server ended the stream
  inference::ModelStreamInferResponse answer;
  while (finished < mine.size() && !load->failed) {
    if (!call->Read(&answer)) {
      broken = true;
      break;
    }
    const auto now = Clock::now();
    if (!answer.error_message().empty()) {
      load->fail("request " + answer.infer_response().id() + ": " + answer.error_message());
      break;
    }
    const auto &response = answer.infer_response();
    char *end = nullptr;
    const int64_t k = std::strtoll(response.id().c_str(), &end, 10);
    if (end == response.id().c_str() || k < 0 || k >= load->sequences || k % load->streams != stream ||
        response.raw_output_contents_size() != 1) {
      load->fail("an answer this client did not ask for (id '" + response.id() + "')");
      break;
    }
    const int64_t t = step[k]++;
    load->latencies[k * load->steps + t] = std::chrono::duration<double>(now - sent[k]).count();
    if (t + 1 == load->steps) {
      load->last_y[k] = response.raw_output_contents(0);
      finished++;
      continue;
    }
    set_step(requests[k], *load, k, t + 1);
    sent[k] = Clock::now();
    if (!call->Write(requests[k])) {
      broken = true;
      break;
    }
  }
  const std::string name = "stream " + std::to_string(stream);
  if (broken) {
    const grpc::Status status = call->Finish();
    load->fail(name + ": ended by the server with " + std::to_string(mine.size() - finished) +
               " sequences unfinished: " + (status.ok() ? "no error given" : status.error_message()));
    return;
  }
  if (finished < mine.size()) {  // another stream failed, or an error answer: stop this one
    context.TryCancel();
    return;
  }
  call->WritesDone();
  const grpc::Status status = call->Finish();
  if (!status.ok()) load->fail(name + ": " + status.error_message());
}

bool positive(const char *text, int64_t *value) {
  char *end = nullptr;
  *value = std::strtoll(text, &end, 10);
  return end != text && *end == '\0' && *value > 0;
}

}  // namespace

int main(int argc, char **argv) {
  if (argc != 10) {
    std::fprintf(stderr,
                 "usage: %s URL MODEL SEQUENCES STEPS STREAMS FIRST_ID TOKENS LATENCIES LAST_YS\n", argv[0]);
    return 2;
  }
  Load load;
  load.model = argv[2];
  if (!positive(argv[3], &load.sequences) || !positive(argv[4], &load.steps) ||
      !positive(argv[5], &load.streams) || !positive(argv[6], &load.first_id)) {
    std::fprintf(stderr, "SEQUENCES, STEPS, STREAMS and FIRST_ID: expected positive integers\n");
    return 2;
  }
  const size_t cells = static_cast<size_t>(load.sequences * load.steps);
  load.tokens.resize(cells);
  std::ifstream tokens(argv[7], std::ios::binary);
  tokens.read(reinterpret_cast<char *>(load.tokens.data()), static_cast<std::streamsize>(cells * 8));
  if (!tokens || tokens.peek() != std::char_traits<char>::eof()) {
    std::fprintf(stderr, "%s: expected exactly %zu int64 token ids\n", argv[7], cells);
    return 2;
  }
  load.latencies.assign(cells, 0.0);
  load.last_y.resize(load.sequences);

  grpc::ChannelArguments arguments;
  arguments.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per stream
  std::vector<std::shared_ptr<grpc::Channel>> channels;
  std::vector<std::unique_ptr<inference::GRPCInferenceService::Stub>> stubs;
  for (int64_t j = 0; j < load.streams; j++) {
    channels.push_back(grpc::CreateCustomChannel(argv[1], grpc::InsecureChannelCredentials(), arguments));
    stubs.push_back(inference::GRPCInferenceService::NewStub(channels.back()));
  }
  const auto began = Clock::now();
  std::vector<std::thread> threads;
  for (int64_t j = 0; j < load.streams; j++) threads.emplace_back(drive, stubs[j].get(), &load, j);
  for (auto &thread : threads) thread.join();
  const double seconds = std::chrono::duration<double>(Clock::now() - began).count();
  if (!load.failure.empty()) {
    std::fprintf(stderr, "%s\n", load.failure.c_str());
    return 1;
  }
  std::ofstream latencies(argv[8], std::ios::binary);
  latencies.write(reinterpret_cast<const char *>(load.latencies.data()),
                  static_cast<std::streamsize>(cells * sizeof(double)));
  std::ofstream ys(argv[9], std::ios::binary);
  for (const auto &y : load.last_y) ys.write(y.data(), static_cast<std::streamsize>(y.size()));
  if (!latencies || !ys) {
    std::fprintf(stderr, "could not write %s or %s\n", argv[8], argv[9]);
    return 1;
  }
  std::printf("%.6f\n", seconds);  // the load's wall time, connections made
  return 0;
}
