// The service's life (bind, run, stop), the way every route is wrapped (JSON errors, metrics),
// and the routes that only describe the service: the page, health, metrics, model, reference.
#include <fmt/format.h>

#include <boneage/bone_age_reference.hpp>
#include <boneage/error.hpp>
#include <boneage/hand_gate.hpp>
#include <chrono>
#include <thread>

#include "serve/service_impl.hpp"
#include "serve/upload.hpp"
#include "serve/web_assets.hpp"

namespace boneage {

namespace serve {

void send_error(httplib::Response& res, int status, const std::string& message) {
    send_json(res, {{"error", message}}, status);
}

void send_json(httplib::Response& res, const nlohmann::json& body, int status) {
    res.status = status;
    res.set_content(body.dump(2) + "\n", "application/json");
}

}  // namespace serve

namespace {

// Whether the request this thread is serving reached a route (whose wrapper counted it), from
// the wrapper to the logger httplib calls once the answer is written. Requests that never
// reach one (unknown paths, bodies over the size limit) are counted by the error handler.
// Both count before the answer is written, so a client that reads /metrics next sees them.
thread_local bool routed = false;

std::string content_type(const std::string& name) {
    auto ends = [&](const char* s) {
        std::string t(s);
        return name.size() >= t.size() && name.compare(name.size() - t.size(), t.size(), t) == 0;
    };
    if (ends(".html")) return "text/html; charset=utf-8";
    if (ends(".js")) return "text/javascript; charset=utf-8";
    if (ends(".css")) return "text/css; charset=utf-8";
    if (ends(".svg")) return "image/svg+xml";
    if (ends(".png")) return "image/png";
    return "application/octet-stream";
}

nlohmann::json reference_rows(bool male) {
    nlohmann::json rows = nlohmann::json::array();
    for (const ReferencePoint& p : reference_sd_table(male))
        rows.push_back({{"age_months", p.age_months}, {"sd_months", p.sd_months}});
    return rows;
}

nlohmann::json describe_model(const Predictor& predictor, const HandGate* gate,
                              const ServiceOptions& options) {
    const ModelConfig& config = predictor.model().net->config();
    nlohmann::json gate_info = nullptr;
    if (gate)
        gate_info = {{"file", options.gate_file.filename().string()},
                     {"sha256", options.gate_file.empty()
                                    ? nlohmann::json()
                                    : nlohmann::json(serve::file_sha256(options.gate_file))},
                     {"threshold", gate->threshold()}};
    // The digest taken when the model was loaded names what runs, even if the file has changed
    // since; a model that came from no file has none but the configured file's.
    const Provenance& v = predictor.provenance();
    return {{"file", options.model_file.filename().string()},
            {"sha256", v.model_sha256.empty() ? serve::file_sha256(options.model_file)
                                              : v.model_sha256},
            {"version", v.model_version},
            {"preprocess_version", v.preprocess_version},
            {"model_build_commit", predictor.model().meta.build_commit},
            {"build_commit", v.build_commit},
            {"crop_method", v.crop_method},
            {"architecture", config.arch},
            {"input_size", config.input_size},
            {"uses_sex", config.use_sex},
            {"precision", to_string(predictor.precision())},
            {"views", predictor.views()},
            {"gate", gate_info},
            {"build", options.build},
            {"api", "v1"}};
}

}  // namespace

void Service::Impl::route(const std::string& method, const std::string& pattern,
                          const std::string& name, httplib::Server::Handler handler) {
    auto wrapped = [this, name, handler](const httplib::Request& req, httplib::Response& res) {
        routed = true;
        const auto start = std::chrono::steady_clock::now();
        try {
            handler(req, res);
        } catch (const QueueFull& e) {
            res.set_header("Retry-After", "5");
            serve::send_error(res, 503, std::string(e.what()) + "; try again shortly");
        } catch (const UsageError& e) {
            serve::send_error(res, 400, e.reason());
        } catch (const std::exception& e) {
            serve::send_error(res, 500, e.what());
        }
        metrics.record_request(
            req.method, name, res.status == -1 ? 200 : res.status,
            std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    };
    if (method == "GET")
        server.Get(pattern, wrapped);
    else if (method == "POST")
        server.Post(pattern, wrapped);
    else if (method == "PUT")
        server.Put(pattern, wrapped);
    else
        throw Error(ErrorKind::Internal, "no route method " + method);
}

void Service::Impl::route(const std::string& method, const std::string& pattern,
                          const std::string& name, Member handler) {
    route(method, pattern, name,
          [this, handler](const httplib::Request& req, httplib::Response& res) {
              (this->*handler)(req, res);
          });
}

void Service::Impl::configure_http() {
    serve::HttpServerOptions http;
    http.request_timeout = options.request_timeout;
    http.io_timeout = options.io_timeout;
    http.threads = options.http_threads;
    http.on_refused = [this](const std::string& method, int status) {
        metrics.record_request(method, "unmatched", status, -1.0);
    };
    server.configure(http);
    // The upload's own size is checked in the route, which answers a clean 413; bodies far
    // beyond it are cut off here without being read.
    server.set_payload_max_length(2 * options.max_upload_bytes + (std::size_t(1) << 20));
    server.set_error_handler(httplib::Server::HandlerWithResponse(
        [this](const httplib::Request& req, httplib::Response& res) {
            if (routed) return httplib::Server::HandlerResponse::Unhandled;  // it has its answer
            metrics.record_request(req.method, "unmatched", res.status, -1.0);
            serve::send_error(
                res, res.status,
                res.status == 404   ? fmt::format("no such resource: {} {}", req.method, req.path)
                : res.status == 413 ? std::string("the request body is too large")
                                    : fmt::format("the request failed ({})", res.status));
            return httplib::Server::HandlerResponse::Handled;
        }));
    server.set_pre_routing_handler([](const httplib::Request&, httplib::Response&) {
        routed = false;
        return httplib::Server::HandlerResponse::Unhandled;
    });
    server.set_logger([](const httplib::Request&, const httplib::Response&) { routed = false; });
}

void Service::Impl::add_page_routes() {
    for (const serve::WebAsset& a : serve::web_assets()) {
        const std::string path = a.name == "index.html" ? "/" : "/" + a.name;
        const std::string type = content_type(a.name);
        route("GET", path, path, [&a, type](const httplib::Request&, httplib::Response& res) {
            res.set_content(reinterpret_cast<const char*>(a.data), a.size, type.c_str());
        });
    }
}

void Service::Impl::add_info_routes() {
    route("GET", "/healthz", "/healthz", [this](const httplib::Request&, httplib::Response& res) {
        serve::send_json(res, {{"status", "ok"}, {"queue_depth", worker->depth()}});
    });
    route("GET", "/metrics", "/metrics", [this](const httplib::Request&, httplib::Response& res) {
        res.set_content(metrics.render(worker->depth(), worker->stats(), server.open_connections()),
                        "text/plain; version=0.0.4");
    });
    route("GET", "/v1/model", "/v1/model", [this](const httplib::Request&, httplib::Response& res) {
        serve::send_json(res, model_info);
    });
    route("GET", "/v1/reference", "/v1/reference",
          [](const httplib::Request&, httplib::Response& res) {
              serve::send_json(res, {{"source",
                                      "Greulich-Pyle atlas, Brush Foundation study "
                                      "(1959): SD of bone age by chronological age"},
                                     {"delayed_below_z", kDelayedBelowZ},
                                     {"advanced_above_z", kAdvancedAboveZ},
                                     {"male", reference_rows(true)},
                                     {"female", reference_rows(false)}});
          });
}

Service::Service(LoadedModel model, PredictorOptions predictor, std::unique_ptr<CaseStore> store,
                 ServiceOptions options)
    : impl_(std::make_unique<Impl>()) {
    Impl& s = *impl_;
    s.options = std::move(options);
    s.store = std::move(store);
    s.gate = predictor.gate;
    auto p = std::make_unique<Predictor>(std::move(model), predictor);
    s.model_info = describe_model(*p, s.gate.get(), s.options);
    s.worker = std::make_unique<InferenceWorker>(std::move(p), s.options.worker);
    s.configure_http();
    s.add_page_routes();
    s.add_info_routes();
    s.add_predict_route();
    s.add_case_routes();
}

Service::~Service() {
    stop();
    impl_->worker->stop();
}

int Service::bind() {
    const ServiceOptions& o = impl_->options;
    int port = o.port == 0 ? impl_->server.bind_to_any_port(o.host)
                           : (impl_->server.bind_to_port(o.host, o.port) ? o.port : -1);
    impl_->server.widen_backlog();
    if (port <= 0)
        throw UsageError(
            fmt::format("cannot listen on {}:{} (in use, or not an address of "
                        "this machine)",
                        o.host, o.port));
    return port;
}

void Service::run() {
    impl_->in_run = true;
    if (!impl_->stop_requested)
        impl_->server.serve();  // returns after stop(), the requests that arrived answered
    impl_->in_run = false;
    impl_->worker->stop();  // then the inference jobs still queued
}

void Service::stop() {
    impl_->stop_requested = true;
    // run() may be between its check and listening: wait (briefly) for it to listen.
    for (int i = 0; i < 2000 && impl_->in_run && !impl_->server.is_running(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    impl_->server.stop();
}

bool Service::running() const { return impl_->server.is_running(); }

}  // namespace boneage
