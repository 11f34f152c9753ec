// The service's state, shared by the files that register its routes (service.cpp: lifecycle,
// the page, model and health; predict_route.cpp; case_routes.cpp).
#pragma once

#include <atomic>
#include <boneage/service.hpp>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "serve/http_server.hpp"
#include "serve/metrics.hpp"

namespace boneage {

class HandGate;

struct Service::Impl {
    ServiceOptions options;
    std::unique_ptr<CaseStore> store;
    std::shared_ptr<const HandGate> gate;
    std::unique_ptr<InferenceWorker> worker;
    serve::Metrics metrics;
    nlohmann::json model_info;  // GET /v1/model, computed once
    serve::HttpServer server;
    // httplib's stop() does nothing before the server has started listening: a stop asked for
    // in that gap is remembered and applied once it has.
    std::atomic<bool> stop_requested{false};
    std::atomic<bool> in_run{false};

    // Registers `handler` for `method` on the regular expression `pattern` under the metrics
    // label `route`; turns exceptions into JSON errors (boneage::Error (Usage) 400, others 500).
    void route(const std::string& method, const std::string& pattern, const std::string& route,
               httplib::Server::Handler handler);

    using Member = void (Impl::*)(const httplib::Request&, httplib::Response&);
    // route() for a member of this struct.
    void route(const std::string& method, const std::string& pattern, const std::string& route,
               Member handler);

    // service.cpp: timeouts, size limit, JSON errors and metrics for requests no route took
    void configure_http();
    void add_page_routes();  // web/, compiled in
    void add_info_routes();  // healthz, metrics, model, reference

    // predict_route.cpp
    void add_predict_route();
    void predict(const httplib::Request& req, httplib::Response& res);
    // The upload `bytes` (of kind `ext`) read by the inference thread; answers the case.
    void read_upload(const httplib::MultipartFormData& upload, const std::string& ext,
                     const PredictRequest& request, httplib::Response& res);

    // case_routes.cpp
    void add_case_routes();
    void list_cases(const httplib::Request& req, httplib::Response& res);
    void labels_csv(const httplib::Request& req, httplib::Response& res);
    void one_case(const httplib::Request& req, httplib::Response& res);
    // The upload as stored, decoded to 8-bit grey PNG (DICOM included), at most 1024 px.
    void case_original(const httplib::Request& req, httplib::Response& res);
    void case_image(const httplib::Request& req, httplib::Response& res);
    void case_heatmap(const httplib::Request& req, httplib::Response& res);
    void put_review(const httplib::Request& req, httplib::Response& res);
    // Draws case `c`'s heatmap from its preprocessed image `input` into `picture`, on the
    // inference thread (Grad-CAM runs the model with gradients; that thread owns it).
    void draw_heatmap(const Case& c, const std::filesystem::path& input,
                      const std::filesystem::path& picture);

    // The case as the API gives it: the prediction's fields, case_id, the image file, links,
    // and the review.
    nlohmann::json case_json(const Case& c) const;
};

namespace serve {

// Answers `status` with {"error": message}.
void send_error(httplib::Response& res, int status, const std::string& message);
// Answers 200 (or `status`) with `body` as JSON.
void send_json(httplib::Response& res, const nlohmann::json& body, int status = 200);

}  // namespace serve

}  // namespace boneage
