// boneage serve: the reading-room service (docs/API.md) on one model, until SIGINT or SIGTERM.
#include <fmt/format.h>
#include <poll.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <boneage/case_store.hpp>
#include <boneage/model.hpp>
#include <boneage/service.hpp>
#include <csignal>
#include <iostream>
#include <thread>

#include "build_info.hpp"
#include "command.hpp"

namespace boneage::cli {

namespace {

struct ServeArgs {
    std::string host = "127.0.0.1";       // listen address; 0.0.0.0 opens it to the network
    int port = 8080;                      // 0: any free port, printed at start
    std::string model;                    // model file; empty: the bundled default
    std::string db = "boneage-cases.db";  // case database; images in <stem>-images/ beside it
    int max_upload_mb = 32;               // larger uploads are refused (413)
    int threads = 8;                      // HTTP requests served at once
    int batch = 8;                        // uploads read in one pass of the network at most
    int request_timeout = 60;             // seconds for a request to arrive whole (then 408)
    InferenceArgs inference;              // --accept-all, --gate, --precision
};

// SIGINT and SIGTERM write a byte to this pipe, and an ordinary thread that reads it asks the
// service to stop (stopping is not async-signal-safe). A handler, not a blocked mask: the
// libraries start threads of their own before this command runs, and any thread may receive it.
int stop_pipe[2] = {-1, -1};

void on_stop_signal(int) {
    const char byte = 1;
    [[maybe_unused]] ssize_t n = write(stop_pipe[1], &byte, 1);
}

void catch_stop_signals() {
    if (pipe(stop_pipe) != 0) throw Error(ErrorKind::Internal, "cannot create a pipe for signals");
    struct sigaction action {};
    action.sa_handler = on_stop_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGINT, &action, nullptr);
    sigaction(SIGTERM, &action, nullptr);
}

// True when a stop signal came within `timeout_ms`.
bool stop_signalled(int timeout_ms) {
    pollfd p{stop_pipe[0], POLLIN, 0};
    return poll(&p, 1, timeout_ms) > 0 && (p.revents & POLLIN);
}

// Every open connection is a file descriptor, and clients waiting on a slow network hold
// theirs: the usual soft limit (1024) would refuse connections long before memory or threads
// run short. The hard limit is the administrator's; this goes up to it.
void raise_open_file_limit() {
    rlimit limit{};
    if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
        limit.rlim_cur = limit.rlim_max;
        setrlimit(RLIMIT_NOFILE, &limit);
    }
}

int run_serve(const ServeArgs& args) {
    catch_stop_signals();
    raise_open_file_limit();
    PredictorOptions predictor = args.inference.predictor_options();  // loads the gate
    const std::filesystem::path model = resolve_model(args.model);

    ServiceOptions options;
    options.host = args.host;
    options.port = args.port;
    options.max_upload_bytes = static_cast<std::size_t>(args.max_upload_mb) << 20;
    options.http_threads = args.threads;
    options.request_timeout = std::chrono::seconds(args.request_timeout);
    options.worker.batch = static_cast<std::size_t>(args.batch);
    options.model_file = model;
    if (predictor.gate) options.gate_file = args.inference.resolve_gate();
    options.build = fmt::format("boneage {} ({})", build_version(), build_commit());
    Service service(load_inference_model(model, "serve"), predictor,
                    open_sqlite_case_store(args.db), options);
    const int port = service.bind();

    std::atomic<bool> done{false};
    std::thread watcher([&] {
        while (!done) {
            if (stop_signalled(200)) {
                std::cerr << "boneage serve: stopping; answering the requests in flight\n";
                service.stop();
                return;
            }
        }
    });
    std::cout << fmt::format("boneage serve: listening on http://{}:{}/ (cases in {})", args.host,
                             port, args.db)
              << std::endl;
    service.run();
    done = true;
    watcher.join();
    std::cerr << "boneage serve: stopped\n";
    return kOk;
}

const Command serve_command{
    "serve", "A reading-room web service: the page at /, the API under /v1 (docs/API.md)",
    [](CLI::App& sub) -> std::function<int()> {
        auto args = std::make_shared<ServeArgs>();
        sub.add_option("--host", args->host, "address to listen on (0.0.0.0: every interface)")
            ->capture_default_str();
        sub.add_option("--port", args->port, "port to listen on (0: any free one, printed)")
            ->check(CLI::Range(0, 65535))
            ->capture_default_str();
        sub.add_option("--model", args->model,
                       "model file (default: $BONEAGE_MODEL or the bundled models/default.bin)")
            ->check(CLI::ExistingFile);
        sub.add_option("--db", args->db,
                       "SQLite file of the cases and reviews; the uploads go to <stem>-images/ "
                       "beside it")
            ->capture_default_str();
        sub.add_option("--max-upload-mb", args->max_upload_mb, "largest upload, MB (413 beyond)")
            ->check(CLI::Range(1, 1024))
            ->capture_default_str();
        sub.add_option("--threads", args->threads, "HTTP requests served at once")
            ->check(CLI::Range(1, 256))
            ->capture_default_str();
        sub.add_option("--request-timeout", args->request_timeout,
                       "seconds for a request (head and upload) to arrive whole, counted from "
                       "the connection or the previous answer; slower clients get 408 and are "
                       "closed, and their answers must be written within the same time")
            ->check(CLI::Range(1, 3600))
            ->capture_default_str();
        sub.add_option("--batch", args->batch,
                       "uploads read in one pass of the network at most (those that arrive "
                       "together)")
            ->check(CLI::Range(1, 256))
            ->capture_default_str();
        sub.add_option("--precision", args->inference.precision,
                       "network precision: auto (bf16 where the CPU has it natively), fp32 or bf16")
            ->capture_default_str();
        sub.add_flag("--accept-all", args->inference.accept_all,
                     "read every upload, even one the hand gate finds is not a whole hand "
                     "radiograph; by default those are stored as rejected, with a reason and no "
                     "bone age");
        sub.add_option("--gate", args->inference.gate,
                       "hand gate file (default: $BONEAGE_GATE or the bundled "
                       "models/hand_gate.bin)")
            ->check(CLI::ExistingFile);
        add_crop_option(sub, args->inference.crop,
                        std::string(crop_help()) +
                            " (default: the detector the model was trained with)");
        return [args] { return run_serve(*args); };
    }};

}  // namespace

}  // namespace boneage::cli
