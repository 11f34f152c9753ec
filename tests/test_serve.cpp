// The reading-room service end to end over loopback HTTP: predictions stored as cases, reviews,
// the labels export, the 4xx answers, restarts on the same database, metrics; the case store
// and the batching inference thread on their own; and `boneage serve` as a process, stopped by
// SIGTERM and killed by SIGKILL.
#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boneage/case_store.hpp>
#include <boneage/error.hpp>
#include <boneage/hand_gate.hpp>
#include <boneage/inference_worker.hpp>
#include <boneage/model.hpp>
#include <boneage/service.hpp>
#include <boneage/synth.hpp>
#include <cctype>
#include <chrono>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <opencv2/imgcodecs.hpp>
#include <regex>
#include <set>
#include <sstream>
#include <thread>

#include "model_support.hpp"
#include "support.hpp"
#include "webdriver.hpp"

namespace fs = std::filesystem;
using boneage::test::ScratchDir;
using nlohmann::json;

namespace {

std::string read_file(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string png_bytes(const cv::Mat& image) {
    std::vector<unsigned char> bytes;
    cv::imencode(".png", image, bytes);
    return std::string(bytes.begin(), bytes.end());
}

std::string phantom_png(double age = 120.0, bool male = true) {
    return png_bytes(boneage::make_phantom(boneage::PhantomLabel{"p", age, male}, 42).image);
}

std::string blank_png() { return png_bytes(cv::Mat(640, 512, CV_8UC1, cv::Scalar(128))); }

bool have_gate() { return !boneage::default_gate_path().empty(); }

// The service in this process on a free loopback port, serving until destroyed.
struct TestServer {
    std::unique_ptr<boneage::Service> service;
    std::thread thread;
    int port = 0;

    TestServer(const fs::path& db, const fs::path& model, bool gate,
               std::size_t max_upload = std::size_t(32) << 20,
               std::chrono::seconds io_timeout = std::chrono::seconds(30),
               std::chrono::seconds request_timeout = std::chrono::seconds(60)) {
        boneage::PredictorOptions predictor;
        predictor.threads = 1;
        boneage::ServiceOptions options;
        options.port = 0;
        options.max_upload_bytes = max_upload;
        options.http_threads = 4;
        options.io_timeout = io_timeout;
        options.request_timeout = request_timeout;
        options.model_file = model;
        options.build = "boneage test";
        if (gate) {
            options.gate_file = boneage::default_gate_path();
            predictor.gate = std::make_shared<const boneage::HandGate>(
                boneage::HandGate::load(options.gate_file));
        }
        service = std::make_unique<boneage::Service>(boneage::load_model(model), predictor,
                                                     boneage::open_sqlite_case_store(db), options);
        port = service->bind();
        thread = std::thread([this] { service->run(); });
    }
    ~TestServer() {
        service->stop();
        thread.join();
    }
    std::unique_ptr<httplib::Client> client() const {
        auto c = std::make_unique<httplib::Client>("127.0.0.1", port);
        c->set_connection_timeout(5);
        c->set_read_timeout(120);
        c->set_write_timeout(30);
        return c;
    }
};

httplib::Result post_image(httplib::Client& c, const std::string& bytes,
                           httplib::MultipartFormDataItems fields = {}) {
    fields.push_back({"file", bytes, "hand.png", "image/png"});
    return c.Post("/v1/predict", fields);
}

// The body of a JSON answer, with the status checked.
json expect_json(const httplib::Result& r, int status) {
    EXPECT_TRUE(r) << "no answer: " << httplib::to_string(r.error());
    if (!r) return json();
    EXPECT_EQ(r->status, status) << r->body;
    EXPECT_NE(r->get_header_value("Content-Type").find("application/json"), std::string::npos);
    return json::parse(r->body);
}

// 4xx answers carry {"error": "..."} with something in it.
void expect_error(const httplib::Result& r, int status) {
    json j = expect_json(r, status);
    ASSERT_TRUE(j.contains("error")) << j.dump();
    EXPECT_FALSE(j["error"].get<std::string>().empty());
}

struct Fixture : ::testing::Test {
    ScratchDir dir{"serve"};
    fs::path model = boneage::test::write_tiny_model(dir / "tiny.bin");
    fs::path db = dir / "cases.db";
};

using Serve = Fixture;

}  // namespace

TEST_F(Serve, HealthzModelReferenceAndThePageAnswer) {
    TestServer server(db, model, false);
    auto c = server.client();
    EXPECT_EQ(expect_json(c->Get("/healthz"), 200)["status"], "ok");
    json m = expect_json(c->Get("/v1/model"), 200);
    EXPECT_EQ(m["file"], "tiny.bin");
    EXPECT_EQ(m["sha256"].get<std::string>().size(), 64u);
    EXPECT_EQ(m["architecture"], "shallow");
    EXPECT_TRUE(m["gate"].is_null());  // no gate: every upload is read
    json ref = expect_json(c->Get("/v1/reference"), 200);
    EXPECT_EQ(ref["male"].size(), 24u);
    EXPECT_EQ(ref["female"].size(), 23u);
    EXPECT_DOUBLE_EQ(ref["male"][0]["sd_months"].get<double>(), 0.69);
    for (const char* path : {"/", "/app.js", "/style.css"}) {
        auto r = c->Get(path);
        ASSERT_TRUE(r) << path;
        EXPECT_EQ(r->status, 200) << path;
        EXPECT_GT(r->body.size(), 200u) << path;
    }
    EXPECT_NE(c->Get("/")->body.find("app.js"), std::string::npos);
    expect_error(c->Get("/no/such/route"), 404);
}

TEST_F(Serve, PredictOnAPhantomGivesACaseWithABoneAge) {
    TestServer server(db, model, have_gate());
    auto c = server.client();
    json j = expect_json(
        post_image(*c, phantom_png(),
                   {{"sex", "female", "", ""}, {"chronological_age_months", "96", "", ""}}),
        200);
    ASSERT_EQ(j["status"], "ok") << j.dump(2);
    EXPECT_TRUE(j["bone_age_months"].is_number());
    EXPECT_EQ(j["male"], false);
    EXPECT_EQ(j["chronological_age_months"], 96.0);
    EXPECT_TRUE(j["z_score"].is_number());
    EXPECT_EQ(j["box"].size(), 4u);
    const std::int64_t id = j["case_id"].get<std::int64_t>();
    EXPECT_EQ(j["path"], std::to_string(id) + ".png");
    EXPECT_TRUE(fs::exists(dir / "cases-images" / (std::to_string(id) + ".png")));
    EXPECT_EQ(expect_json(c->Get("/v1/cases/" + std::to_string(id)), 200)["bone_age_months"],
              j["bone_age_months"]);

    auto image = c->Get("/v1/cases/" + std::to_string(id) + "/image.png");
    ASSERT_TRUE(image);
    EXPECT_EQ(image->status, 200);
    cv::Mat hand = cv::imdecode(std::vector<unsigned char>(image->body.begin(), image->body.end()),
                                cv::IMREAD_UNCHANGED);
    EXPECT_EQ(hand.cols, 64);  // the model's preprocessed size
    auto heatmap = c->Get("/v1/cases/" + std::to_string(id) + "/heatmap.png");
    ASSERT_TRUE(heatmap);
    EXPECT_EQ(heatmap->status, 200) << heatmap->body;
    EXPECT_EQ(heatmap->get_header_value("Content-Type"), "image/png");
    EXPECT_FALSE(
        cv::imdecode(std::vector<unsigned char>(heatmap->body.begin(), heatmap->body.end()),
                     cv::IMREAD_COLOR)
            .empty());
}

TEST_F(Serve, ModelAndPredictNameTheModelVersionBuildPrecisionAndCrop) {
    TestServer server(db, model, false);
    auto c = server.client();
    json m = expect_json(c->Get("/v1/model"), 200);
    ASSERT_TRUE(m["version"].is_string()) << m.dump(2);
    EXPECT_EQ(m["version"].get<std::string>().rfind("shallow-", 0), 0u) << m.dump(2);
    EXPECT_TRUE(m["preprocess_version"].is_number_integer()) << m.dump(2);
    EXPECT_TRUE(m["build_commit"].is_string()) << m.dump(2);
    EXPECT_EQ(m["crop_method"], "threshold") << m.dump(2);
    EXPECT_EQ(m["views"], 1) << m.dump(2);  // the tiny model records none
    json j = expect_json(post_image(*c, phantom_png(), {{"sex", "female", "", ""}}), 200);
    ASSERT_TRUE(j.contains("provenance")) << j.dump(2);
    const json& p = j["provenance"];
    EXPECT_EQ(p["model_file"], "tiny.bin");
    EXPECT_EQ(p["model_sha256"], m["sha256"]);
    EXPECT_EQ(p["model_version"], m["version"]);
    EXPECT_EQ(p["build_commit"], m["build_commit"]);
    EXPECT_EQ(p["precision"], m["precision"]);
    EXPECT_EQ(p["crop_method"], "threshold");
    EXPECT_EQ(j["sex_ignored"], true) << j.dump(2);  // the tiny model does not take sex
}

TEST_F(Serve, ADicomUploadIsReadAndKeptAsDicom) {
    auto set = boneage::write_phantom_set(dir / "dcm", 1, 3, {}, boneage::PhantomFormat::Dicom);
    const std::string bytes = read_file(dir / "dcm" / (set[0].label.id + ".dcm"));
    TestServer server(db, model, false);
    auto c = server.client();
    json j = expect_json(
        c->Post("/v1/predict",
                httplib::MultipartFormDataItems{{"file", bytes, "x.dcm", "application/dicom"}}),
        200);
    ASSERT_EQ(j["status"], "ok") << j.dump(2);
    EXPECT_EQ(j["path"], std::to_string(j["case_id"].get<std::int64_t>()) + ".dcm");
    EXPECT_TRUE(fs::exists(dir / "cases-images" / j["path"].get<std::string>()));
    // The page shows the upload through original.png: a browser shows no DICOM.
    auto original = c->Get(j["original_url"].get<std::string>());
    ASSERT_TRUE(original);
    EXPECT_EQ(original->status, 200) << original->body;
    EXPECT_EQ(original->get_header_value("Content-Type"), "image/png");
    const cv::Mat shown =
        cv::imdecode(std::vector<unsigned char>(original->body.begin(), original->body.end()),
                     cv::IMREAD_UNCHANGED);
    EXPECT_EQ(shown.type(), CV_8UC1);
    EXPECT_EQ(shown.cols, j["width"].get<int>());  // 512 px: under the 1024 px cap, not resized
    EXPECT_EQ(shown.rows, j["height"].get<int>());
}

TEST_F(Serve, ABlankImageIsRejectedWithAReasonAndKeptAsACase) {
    if (!have_gate())
        GTEST_SKIP() << "no bundled hand gate (models/hand_gate.bin): nothing to reject with";
    TestServer server(db, model, true);
    auto c = server.client();
    json j = expect_json(post_image(*c, blank_png()), 200);
    EXPECT_EQ(j["status"], "rejected");
    EXPECT_FALSE(j["message"].get<std::string>().empty());
    EXPECT_TRUE(j["bone_age_months"].is_null());
    const std::string id = std::to_string(j["case_id"].get<std::int64_t>());
    EXPECT_EQ(expect_json(c->Get("/v1/cases/" + id), 200)["status"], "rejected");
    EXPECT_EQ(c->Get("/v1/cases/" + id + "/original.png")->status, 200);  // what was refused
    expect_error(c->Get("/v1/cases/99999/original.png"), 404);
    expect_error(c->Get("/v1/cases/" + id + "/image.png"), 404);
    expect_error(c->Get("/v1/cases/" + id + "/heatmap.png"), 404);
}

TEST_F(Serve, AReviewIsKeptAndExportedAsLabels) {
    TestServer server(db, model, false);
    auto c = server.client();
    json a = expect_json(post_image(*c, phantom_png(100, true), {{"sex", "male", "", ""}}), 200);
    json b = expect_json(post_image(*c, phantom_png(150, false), {{"sex", "female", "", ""}}), 200);
    json none = expect_json(post_image(*c, phantom_png()), 200);  // sex unknown: not exported
    const std::string ida = std::to_string(a["case_id"].get<std::int64_t>());
    const std::string idb = std::to_string(b["case_id"].get<std::int64_t>());
    const std::string idn = std::to_string(none["case_id"].get<std::int64_t>());

    json r = expect_json(c->Put("/v1/cases/" + ida + "/review",
                                R"({"reader": "Dr A", "bone_age_months": 111.5, "comment": "ok"})",
                                "application/json"),
                         200);
    EXPECT_EQ(r["review"]["reader"], "Dr A");
    EXPECT_EQ(r["review"]["bone_age_months"], 111.5);
    EXPECT_EQ(r["review"]["agrees"], false);
    json agreed = expect_json(c->Put("/v1/cases/" + idb + "/review",
                                     R"({"reader": "Dr B", "agrees": true})", "application/json"),
                              200);
    EXPECT_EQ(agreed["review"]["bone_age_months"], b["bone_age_months"]);
    expect_json(c->Put("/v1/cases/" + idn + "/review", R"({"reader": "Dr C", "agrees": true})",
                       "application/json"),
                200);

    json list = expect_json(c->Get("/v1/cases?limit=2"), 200);
    ASSERT_EQ(list["cases"].size(), 2u);
    EXPECT_EQ(list["cases"][0]["case_id"], none["case_id"]);  // newest first

    auto csv = c->Get("/v1/cases.csv");
    ASSERT_TRUE(csv);
    EXPECT_EQ(csv->status, 200);
    EXPECT_EQ(csv->body, "id,boneage,male\n" + ida + ",111.50,True\n" + idb + "," +
                             fmt::format("{:.2f}", b["bone_age_months"].get<double>()) +
                             ",False\n");
}

TEST_F(Serve, BadRequestsGetFourHundredsWithAJsonError) {
    TestServer server(db, model, false, std::size_t(1) << 20);
    auto c = server.client();
    expect_error(c->Post("/v1/predict", httplib::MultipartFormDataItems{{"sex", "male", "", ""}}),
                 400);  // no file field
    expect_error(c->Post("/v1/predict", R"({"file": "x"})", "application/json"), 415);
    std::string big = phantom_png();
    big.resize(std::size_t(3) << 19, '\0');  // 1.5 MB, over the 1 MB limit
    expect_error(post_image(*c, big), 413);
    expect_error(post_image(*c, "this is not an image"), 422);
    expect_error(post_image(*c, phantom_png(), {{"sex", "other", "", ""}}), 400);
    expect_error(post_image(*c, phantom_png(), {{"chronological_age_months", "ten", "", ""}}), 400);
    expect_error(post_image(*c, phantom_png(), {{"birth_date", "2023-02-29", "", ""}}), 400);
    expect_error(c->Get("/v1/cases/99999"), 404);
    expect_error(c->Put("/v1/cases/99999/review", R"({"reader": "x", "bone_age_months": 100})",
                        "application/json"),
                 404);
    expect_error(c->Get("/v1/cases?limit=0"), 400);
    EXPECT_TRUE(expect_json(c->Get("/v1/cases"), 200)["cases"].empty());  // nothing was stored

    json ok = expect_json(post_image(*c, phantom_png()), 200);
    const std::string review =
        "/v1/cases/" + std::to_string(ok["case_id"].get<std::int64_t>()) + "/review";
    for (const char* body : {"not json", "[1, 2]", R"({"bone_age_months": 100})",
                             R"({"reader": "x", "bone_age_months": "ten"})",
                             R"({"reader": "x", "bone_age_months": 500})", R"({"reader": "x"})",
                             R"({"reader": "", "agrees": true})"})
        expect_error(c->Put(review, body, "application/json"), 400);
    EXPECT_TRUE(expect_json(c->Get(review.substr(0, review.size() - 7)), 200)["review"].is_null());
}

TEST_F(Serve, CasesAndReviewsSurviveARestart) {
    std::string id;
    json first;
    {
        TestServer server(db, model, false);
        auto c = server.client();
        first = expect_json(post_image(*c, phantom_png(), {{"sex", "male", "", ""}}), 200);
        id = std::to_string(first["case_id"].get<std::int64_t>());
        expect_json(c->Put("/v1/cases/" + id + "/review",
                           R"({"reader": "Dr A", "bone_age_months": 90})", "application/json"),
                    200);
    }
    TestServer again(db, model, false);
    auto c = again.client();
    json j = expect_json(c->Get("/v1/cases/" + id), 200);
    EXPECT_EQ(j["bone_age_months"], first["bone_age_months"]);
    EXPECT_EQ(j["review"]["bone_age_months"], 90.0);
    EXPECT_EQ(c->Get("/v1/cases/" + id + "/image.png")->status, 200);
    json next = expect_json(post_image(*c, phantom_png()), 200);
    EXPECT_GT(next["case_id"].get<std::int64_t>(), first["case_id"].get<std::int64_t>());
}

TEST_F(Serve, MetricsCountRequestsPredictionsAndTheQueue) {
    TestServer server(db, model, false);
    auto c = server.client();
    expect_json(post_image(*c, phantom_png()), 200);
    expect_json(post_image(*c, phantom_png()), 200);
    expect_error(c->Get("/v1/cases/424242"), 404);
    auto r = c->Get("/metrics");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    const std::string& m = r->body;
    for (const char* line :
         {"boneage_http_requests_total{method=\"POST\",route=\"/v1/predict\",code=\"200\"} 2\n",
          "boneage_http_requests_total{method=\"GET\",route=\"/v1/cases/{id}\",code=\"404\"} 1\n",
          "boneage_predictions_total{status=\"ok\"} 2\n", "boneage_rejects_total 0\n",
          "boneage_inference_queue_depth 0\n", "boneage_inference_batched_predictions_total 2\n",
          "boneage_http_request_duration_seconds_count 3\n",
          "# TYPE boneage_http_request_duration_seconds histogram\n"})
        EXPECT_NE(m.find(line), std::string::npos) << "missing: " << line << "in:\n" << m;
}

TEST_F(Serve, UploadsSentTogetherAreReadInOneBatch) {
    boneage::InferenceWorkerOptions options;
    options.gather = std::chrono::milliseconds(500);  // ample for three submissions
    boneage::InferenceWorker worker(
        std::make_unique<boneage::Predictor>(boneage::load_model(model)), options);
    std::vector<fs::path> files;
    for (int i = 0; i < 3; ++i) {
        files.push_back(dir / ("p" + std::to_string(i) + ".png"));
        cv::imwrite(
            files.back().string(),
            boneage::make_phantom(boneage::PhantomLabel{"p", 60.0 + 40 * i, i % 2 == 0}, i).image);
    }
    std::vector<std::future<boneage::Prediction>> pending;
    for (const fs::path& f : files) {
        boneage::PredictRequest r;
        r.male = f == files[1];
        pending.push_back(worker.predict(f, r));
    }
    for (std::size_t i = 0; i < pending.size(); ++i) {
        boneage::Prediction p = pending[i].get();
        EXPECT_EQ(p.status, "ok") << p.message;
        EXPECT_EQ(p.path, files[i]);
        EXPECT_EQ(p.male, std::optional<bool>(i == 1));  // each upload keeps its own patient
    }
    EXPECT_EQ(worker.stats().batches, 1u);
    EXPECT_EQ(worker.stats().predictions, 3u);
}

TEST_F(Serve, SixteenClientsAtOnceEachGetTheirOwnCase) {
    TestServer server(db, model, false);
    const std::string image = phantom_png();
    std::vector<std::thread> clients;
    std::vector<std::vector<json>> answers(16);
    for (int k = 0; k < 16; ++k)
        clients.emplace_back([&, k] {
            auto c = server.client();
            for (int i = 0; i < 2; ++i) {  // bounded: two uploads per client
                const std::string sex = (k + i) % 2 ? "male" : "female";
                auto r = post_image(*c, image, {{"sex", sex, "", ""}});
                answers[k].push_back(r && r->status == 200 ? json::parse(r->body) : json());
            }
        });
    for (std::thread& t : clients) t.join();
    std::set<std::int64_t> ids;
    for (int k = 0; k < 16; ++k)
        for (int i = 0; i < 2; ++i) {
            const json& j = answers[k][i];
            ASSERT_TRUE(j.is_object()) << "client " << k << " upload " << i << " failed";
            EXPECT_EQ(j["status"], "ok");
            EXPECT_EQ(j["male"], (k + i) % 2 == 1);  // each answer is its own upload's
            ids.insert(j["case_id"].get<std::int64_t>());
        }
    EXPECT_EQ(ids.size(), 32u);
    EXPECT_EQ(expect_json(server.client()->Get("/v1/cases?limit=100"), 200)["cases"].size(), 32u);
}

// The reading room in a real browser (headless Chromium over WebDriver), as a reader uses it:
// a phantom uploaded through the file picker with the sex and age filled in, the bone age read
// off the page with its chart, the upload with its crop box and the heatmap, a correction saved
// through the review form and found in the labels export. The last view of the page is left in
// the build folder as test-screenshots/reading-room.png.
TEST_F(Serve, AReaderUploadsReadsAndCorrectsACaseInABrowser) {
    const fs::path browser = "/usr/bin/chromium", chromedriver = "/usr/bin/chromedriver";
    for (const fs::path& program : {browser, chromedriver})
        if (!fs::exists(program))
            GTEST_SKIP() << "no " << program
                         << " (apt-get install chromium chromium-driver): the page is not "
                            "tested in a browser";
    TestServer server(db, model, have_gate());
    const fs::path hand = dir / "hand.png";
    ASSERT_TRUE(cv::imwrite(
        hand.string(), boneage::make_phantom(boneage::PhantomLabel{"p", 110.0, false}, 7).image));

    std::unique_ptr<boneage::test::WebDriver> driver;
    try {
        driver = boneage::test::WebDriver::start(chromedriver, browser, dir / "profile",
                                                 dir / "chromedriver.log", 1366, 1000);
    } catch (const std::exception& e) {
        const std::string log = read_file(dir / "chromedriver.log");
        FAIL() << e.what() << "\nchromedriver's log ends:\n"
               << log.substr(log.size() > 3000 ? log.size() - 3000 : 0);
    }
    using std::chrono::seconds;
    auto text_of = [&](const std::string& css) { return driver->text(driver->find(css)); };
    driver->open(fmt::format("http://127.0.0.1:{}/", server.port));
    ASSERT_TRUE(driver->wait_until(seconds(15), [&] {
        return text_of("#model").find("tiny.bin") != std::string::npos;
    })) << "the page did not show the model within 15 s";

    // A file dropped on the drop zone is taken (a synthetic drop: WebDriver cannot drag from
    // outside the browser); then the real upload goes through the file picker.
    const json dropped = driver->script(
        "const t = new DataTransfer();"
        "t.items.add(new File([new Uint8Array([137, 80, 78, 71])], 'dropped.png'));"
        "document.getElementById('drop').dispatchEvent("
        "    new DragEvent('drop', {dataTransfer: t, bubbles: true, cancelable: true}));"
        "return [document.getElementById('drop-text').textContent,"
        "        document.getElementById('submit').disabled];");
    EXPECT_EQ(dropped[0].get<std::string>().rfind("dropped.png", 0), 0u) << dropped;
    EXPECT_EQ(dropped[1], false) << "a dropped file does not enable the upload";
    driver->type(driver->find("#file"), hand.string());  // the file picker
    driver->click(driver->find("#sex option[value=female]"));
    driver->type(driver->find("#age"), "100");
    driver->click(driver->find("#submit"));
    std::string shown;
    ASSERT_TRUE(driver->wait_until(seconds(60),
                                   [&] {
                                       shown = text_of("#bone-age");
                                       return !shown.empty();
                                   }))
        << "no bone age on the page within 60 s; the form says: " << text_of("#form-error");

    const json cases = expect_json(server.client()->Get("/v1/cases?limit=5"), 200)["cases"];
    ASSERT_EQ(cases.size(), 1u);
    const json& stored = cases[0];
    ASSERT_EQ(stored["status"], "ok") << stored.dump(2);
    const std::int64_t id = stored["case_id"].get<std::int64_t>();
    EXPECT_EQ(shown, fmt::format("{:.1f}", stored["bone_age_months"].get<double>()));
    EXPECT_EQ(stored["male"], false);
    EXPECT_EQ(stored["chronological_age_months"], 100.0);
    EXPECT_EQ(stored["original_name"], "hand.png");

    // The chart: the point at (100 months, the bone age) labelled with its Z-score, on the
    // female band.
    ASSERT_TRUE(stored["z_score"].is_number());
    const json chart = driver->script(
        "const svg = document.querySelector('#chart svg');"
        "return svg && [svg.querySelectorAll('circle').length,"
        "               svg.querySelector('.point-label').textContent, svg.textContent];");
    ASSERT_TRUE(chart.is_array()) << "no chart on the page";
    EXPECT_EQ(chart[0], 1);
    const double z = stored["z_score"].get<double>();
    EXPECT_NE(chart[1].get<std::string>().find(fmt::format("Z {}{:.2f}", z > 0 ? "+" : "", z)),
              std::string::npos)
        << chart[1];
    EXPECT_NE(chart[2].get<std::string>().find("females (Greulich-Pyle)"), std::string::npos);
    // The upload with its crop box, and the heatmap (drawn on request) once it has loaded.
    const json original = driver->script(
        "const o = document.getElementById('original');"
        "const box = o.querySelector('rect[stroke]');"
        "return [o.querySelector('image').getAttribute('href'),"
        "        box && [box.x.baseVal.value, box.width.baseVal.value]];");
    EXPECT_EQ(original[0], fmt::format("/v1/cases/{}/original.png", id));
    ASSERT_TRUE(original[1].is_array()) << "no crop box drawn on the upload";
    EXPECT_EQ(original[1][0], stored["box"][0]);
    EXPECT_EQ(original[1][1], stored["box"][2]);
    EXPECT_TRUE(driver->wait_until(seconds(30), [&] {
        return driver
            ->script(
                "const i = document.getElementById('heatmap');"
                "return i.complete && i.naturalWidth > 0;")
            .get<bool>();
    })) << "the heatmap did not load within 30 s";

    // The review: a correction with the reader's name, then the labels export has it.
    driver->type(driver->find("#reader"), "Dr Browser");
    driver->type(driver->find("#correct"), "111.5");
    driver->click(driver->find("#save-correction"));
    ASSERT_TRUE(driver->wait_until(
        seconds(15),
        [&] {
            return text_of("#review-state").find("Reviewed by Dr Browser") != std::string::npos;
        }))
        << "the review was not shown as saved; the form says: " << text_of("#review-error");
    EXPECT_TRUE(driver->wait_until(seconds(5), [&] {
        return text_of("#cases li.current").find("reviewed") != std::string::npos;
    })) << "the recent cases do not show the case as reviewed";
    auto csv = server.client()->Get("/v1/cases.csv");
    ASSERT_TRUE(csv);
    EXPECT_EQ(csv->body, fmt::format("id,boneage,male\n{},111.50,False\n", id));

    // The whole page at a laptop's width, from the top: the window made as tall as the page.
    const int page_height =
        driver->script("window.scrollTo(0, 0); return document.documentElement.scrollHeight;")
            .get<int>();
    EXPECT_LE(driver->script("return document.documentElement.scrollWidth;").get<int>(), 1366)
        << "the page is wider than a 1366 px laptop screen";
    driver->resize(1366, std::min(page_height + 140, 2400));  // the window's frame included
    const std::string png = driver->screenshot();
    const cv::Mat shot =
        cv::imdecode(std::vector<unsigned char>(png.begin(), png.end()), cv::IMREAD_COLOR);
    ASSERT_FALSE(shot.empty()) << "the screenshot is not a PNG";
    EXPECT_EQ(shot.cols, 1366);
    const fs::path shots = fs::path(BONEAGE_CLI).parent_path() / "test-screenshots";
    fs::create_directories(shots);
    std::ofstream(shots / "reading-room.png", std::ios::binary) << png;

    // A rejected upload, opened by its link: the gate's reason, the upload, and no number.
    if (!have_gate()) return;
    const json bad = expect_json(post_image(*server.client(), blank_png()), 200);
    ASSERT_EQ(bad["status"], "rejected");
    driver->open(fmt::format("http://127.0.0.1:{}/#case={}", server.port,
                             bad["case_id"].get<std::int64_t>()));
    EXPECT_TRUE(driver->wait_until(seconds(15), [&] {
        return text_of("#reject-reason") == bad["message"].get<std::string>();
    })) << "the rejected case's reason is not shown";
    EXPECT_EQ(text_of("#bone-age"), "") << "a rejected case shows a bone age";
    EXPECT_TRUE(driver->script("return document.getElementById('answer').hidden;").get<bool>());
}

// ---- abuse: cut, slow, crowding and wandering clients; none of them may store a case ----

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
    return std::chrono::duration<double>(Clock::now() - start).count();
}

// A blocking loopback socket connected to `port`, whose reads and writes give up after
// `timeout_ms`; -1 when it cannot connect.
int raw_connect(int port, int timeout_ms = 5000) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

bool send_all(int fd, const std::string& bytes) {
    std::size_t sent = 0;
    while (sent < bytes.size()) {
        ssize_t n = send(fd, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) return false;
        sent += static_cast<std::size_t>(n);
    }
    return true;
}

// What the server sends until it closes or the socket's read timeout passes (at most 1 MB).
std::string read_until_closed(int fd) {
    std::string out;
    char buf[4096];
    for (int i = 0; i < 256; ++i) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n <= 0) break;
        out.append(buf, static_cast<std::size_t>(n));
    }
    return out;
}

// The status code of a raw HTTP answer; 0 when there is none.
int raw_status(const std::string& answer) {
    static const std::regex line("^HTTP/1\\.[01] (\\d{3}) ");
    std::smatch m;
    return std::regex_search(answer, m, line) ? std::stoi(m[1].str()) : 0;
}

const std::string kBoundary = "----boneage-abuse-test";

std::string multipart_body(const std::string& png) {
    return "--" + kBoundary +
           "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"hand.png\"\r\n"
           "Content-Type: image/png\r\n\r\n" +
           png + "\r\n--" + kBoundary + "--\r\n";
}

// The head of a POST /v1/predict announcing `content_length` bytes of multipart body.
std::string predict_head(std::size_t content_length) {
    return fmt::format(
        "POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        "Content-Type: multipart/form-data; boundary={}\r\nContent-Length: {}\r\n\r\n",
        kBoundary, content_length);
}

// Whether GET /healthz answers 200 within `limit`, a fresh connection per try.
bool answers_healthz(int port, std::chrono::seconds limit) {
    const auto start = Clock::now();
    for (int i = 0; i < 100 && Clock::now() - start < limit; ++i) {
        httplib::Client c("127.0.0.1", port);
        c.set_connection_timeout(1);
        c.set_read_timeout(2);
        auto r = c.Get("/healthz");
        if (r && r->status == 200) return true;
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return false;
}

std::size_t stored_cases(const TestServer& server) {
    return expect_json(server.client()->Get("/v1/cases?limit=500"), 200)["cases"].size();
}

// Files in the images folder, hidden ones (uploads being placed) included.
std::size_t image_files(const fs::path& folder) {
    std::error_code ec;
    if (!fs::is_directory(folder, ec)) return 0;
    return static_cast<std::size_t>(
        std::distance(fs::directory_iterator(folder), fs::directory_iterator()));
}

}  // namespace

TEST_F(Serve, TruncatedUploadsGetAFourHundredOrAreCutAndStoreNothing) {
    TestServer server(db, model, false, std::size_t(32) << 20, std::chrono::seconds(2),
                      std::chrono::seconds(2));
    const std::string body = multipart_body(phantom_png());
    const std::string half = body.substr(0, body.size() / 2);
    {
        // Content-Length beyond what is sent, then the socket closed.
        const int fd = raw_connect(server.port);
        ASSERT_GE(fd, 0);
        EXPECT_TRUE(send_all(fd, predict_head(body.size() + 100000) + half));
        close(fd);
    }
    {
        // The same, the client's side shut and the answer awaited: a 4xx, or the socket cut.
        const int fd = raw_connect(server.port, 8000);
        ASSERT_GE(fd, 0);
        EXPECT_TRUE(send_all(fd, predict_head(body.size() + 100000) + half));
        shutdown(fd, SHUT_WR);
        const std::string answer = read_until_closed(fd);
        close(fd);
        const int status = raw_status(answer);
        EXPECT_TRUE(status == 0 || (status >= 400 && status < 500)) << answer;
    }
    {
        // A body cut mid-part: as long as announced, but half the image and no closing
        // boundary. The server has the whole body, so it answers, with a 4xx.
        const int fd = raw_connect(server.port, 8000);
        ASSERT_GE(fd, 0);
        EXPECT_TRUE(send_all(fd, predict_head(half.size()) + half));
        const std::string answer = read_until_closed(fd);
        close(fd);
        const int status = raw_status(answer);
        EXPECT_GE(status, 400) << answer;
        EXPECT_LT(status, 500) << answer;
    }
    EXPECT_TRUE(answers_healthz(server.port, std::chrono::seconds(5)));
    EXPECT_EQ(stored_cases(server), 0u);
    EXPECT_EQ(image_files(dir / "cases-images"), 0u) << "an upload left a file behind";
}

namespace {

// How a connection fed `bytes` one at a time, one every `gap`, ended: whether the server
// answered or closed before all were sent, after how long, and what it sent.
struct Trickled {
    bool cut = false;
    double held = 0.0;
    std::string answer;
};

Trickled trickle(int port, const std::string& head, const std::string& bytes,
                 std::chrono::milliseconds gap) {
    Trickled t;
    const int fd = raw_connect(port, 1000);
    if (fd < 0) return t;
    const auto start = Clock::now();
    t.cut = !send_all(fd, head);
    for (std::size_t i = 0; i < bytes.size() && !t.cut; ++i) {  // bounded by bytes.size()
        if (send(fd, &bytes[i], 1, MSG_NOSIGNAL) != 1) t.cut = true;
        pollfd p{fd, POLLIN, 0};
        if (poll(&p, 1, static_cast<int>(gap.count())) > 0) t.cut = true;  // answered or closed
    }
    t.held = seconds_since(start);
    if (t.cut) t.answer = read_until_closed(fd);
    close(fd);
    return t;
}

}  // namespace

// A client may not hold the service by sending slowly: a request that is not whole within the
// request deadline (2 s here) is answered 408 and closed, whether its head or its body is
// late, while the others are served; nothing is stored for it.
TEST_F(Serve, SlowHeadsAndSlowBodiesAreCutAtTheRequestDeadline) {
    TestServer server(db, model, false, std::size_t(32) << 20, std::chrono::seconds(2),
                      std::chrono::seconds(2));
    const std::string body = multipart_body(phantom_png());
    const std::string request = predict_head(body.size()) + body;
    const auto gap = std::chrono::milliseconds(250);  // each gap well under the 2 s read timeout
    Trickled slow_head, slow_body;
    std::thread head_sender(
        [&] { slow_head = trickle(server.port, "", request.substr(0, 40), gap); });
    std::thread body_sender([&] {
        slow_body = trickle(server.port, predict_head(body.size()), body.substr(0, 40), gap);
    });
    // Meanwhile, four threads' worth of other requests are answered at once.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    for (int i = 0; i < 8; ++i) {
        const auto start = Clock::now();
        auto r = server.client()->Get("/healthz");
        EXPECT_TRUE(r && r->status == 200) << "GET /healthz " << i << " beside the slow clients";
        EXPECT_LT(seconds_since(start), 1.0) << "GET /healthz waited on the slow clients";
    }
    head_sender.join();
    body_sender.join();
    for (const auto& [what, t] : {std::pair<const char*, const Trickled&>{"a slow head", slow_head},
                                  {"a slow body", slow_body}}) {
        EXPECT_TRUE(t.cut) << what << " held its connection for " << t.held
                           << " s under a 2 s request deadline";
        EXPECT_GT(t.held, 1.5) << what << " was cut before its deadline";
        EXPECT_LT(t.held, 4.0) << what;
        EXPECT_EQ(raw_status(t.answer), 408) << what << ":\n" << t.answer;
        EXPECT_NE(t.answer.find("\"error\""), std::string::npos) << what << ":\n" << t.answer;
    }
    EXPECT_EQ(stored_cases(server), 0u);
    EXPECT_EQ(image_files(dir / "cases-images"), 0u);
    const std::string metrics = server.client()->Get("/metrics")->body;
    EXPECT_NE(
        metrics.find(
            "boneage_http_requests_total{method=\"POST\",route=\"unmatched\",code=\"408\"} 2"),
        std::string::npos)
        << metrics;
}

// What the intake does beside buffering: it answers "100 Continue" itself (httplib must not
// answer it twice), keeps a connection for several requests, and serves two requests sent in
// one write one after the other.
TEST_F(Serve, ExpectContinueKeepAliveAndPipelinedRequestsAreServed) {
    TestServer server(db, model, false, std::size_t(32) << 20, std::chrono::seconds(5),
                      std::chrono::seconds(5));
    const std::string body = multipart_body(phantom_png());
    {
        const int fd = raw_connect(server.port, 5000);
        ASSERT_GE(fd, 0);
        std::string head = predict_head(body.size());
        head.insert(head.size() - 2, "Expect: 100-continue\r\n");
        ASSERT_TRUE(send_all(fd, head));
        char buf[64] = {};
        const ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
        ASSERT_GT(n, 0) << "no 100 Continue";
        EXPECT_EQ(std::string(buf, static_cast<std::size_t>(n)), "HTTP/1.1 100 Continue\r\n\r\n");
        ASSERT_TRUE(send_all(fd, body));
        const std::string answer = read_until_closed(fd);
        close(fd);
        EXPECT_EQ(raw_status(answer), 200) << answer;
        EXPECT_EQ(answer.find("100 Continue"), std::string::npos) << "a second 100 Continue";
    }
    {
        httplib::Client c("127.0.0.1", server.port);
        c.set_keep_alive(true);
        c.set_read_timeout(60);
        for (int i = 0; i < 3; ++i) {
            expect_json(c.Get("/healthz"), 200);
            expect_json(post_image(c, phantom_png()), 200);
        }
    }
    {
        const int fd = raw_connect(server.port, 5000);
        ASSERT_GE(fd, 0);
        ASSERT_TRUE(send_all(fd,
                             "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                             "GET /v1/cases/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        const std::string answers = read_until_closed(fd);
        close(fd);
        const std::size_t second = answers.find("HTTP/1.1", 1);
        ASSERT_NE(second, std::string::npos) << answers;
        EXPECT_EQ(raw_status(answers), 200) << answers;
        EXPECT_EQ(raw_status(answers.substr(second)), 200) << answers;
        EXPECT_NE(answers.find("\"case_id\": 1"), std::string::npos) << answers;
    }
    EXPECT_EQ(stored_cases(server), 4u);
}

TEST_F(Serve, PathsOutsideTheApiGetA404WithAJsonError) {
    TestServer server(db, model, false, std::size_t(32) << 20, std::chrono::seconds(2),
                      std::chrono::seconds(2));
    for (const char* method : {"GET", "POST"})
        for (const char* path :
             {"/../etc/passwd", "/../../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
              "/v1/../../etc/passwd", "/v1/cases/1/../../../../etc/passwd", "//etc/passwd", "/v2/x",
              "/v1/predict/x", "/v1/cases/1/image.png/../../../cases.db"}) {
            const int fd = raw_connect(server.port);
            ASSERT_GE(fd, 0);
            ASSERT_TRUE(send_all(fd, fmt::format("{} {} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                                 "Connection: close\r\nContent-Length: 0\r\n\r\n",
                                                 method, path)));
            const std::string answer = read_until_closed(fd);
            close(fd);
            EXPECT_EQ(raw_status(answer), 404) << method << " " << path << "\n" << answer;
            const std::size_t split = answer.find("\r\n\r\n");
            ASSERT_NE(split, std::string::npos) << method << " " << path << "\n" << answer;
            std::string head = answer.substr(0, split);
            std::transform(head.begin(), head.end(), head.begin(),
                           [](unsigned char ch) { return static_cast<char>(std::tolower(ch)); });
            EXPECT_NE(head.find("content-type: application/json"), std::string::npos)
                << method << " " << path << "\n"
                << answer;
            const json j = json::parse(answer.substr(split + 4), nullptr, false);
            EXPECT_TRUE(j.is_object() && j.contains("error")) << method << " " << path;
            EXPECT_EQ(answer.find("root:"), std::string::npos) << method << " " << path;
            EXPECT_EQ(answer.find("SQLite format"), std::string::npos) << method << " " << path;
        }
    EXPECT_EQ(stored_cases(server), 0u);
}

// A thousand connections opened at once, a third sending half a request line, a third half an
// upload, a third nothing: the service answers others meanwhile, answers each of the first two
// thirds 408 and closes the last third at the 3 s request deadline, and stores nothing.
TEST_F(Serve, AThousandConnectionsAtOnceAreCutAtTheDeadlineWhileOthersAreServed) {
    constexpr std::size_t kConnections = 1000;
    // Both ends of every connection are in this process, and each is a file descriptor.
    const rlim_t needed = 2 * kConnections + 256;
    rlimit limit{};
    ASSERT_EQ(getrlimit(RLIMIT_NOFILE, &limit), 0);
    const rlimit before = limit;
    if (limit.rlim_cur < needed) {
        if (limit.rlim_max < needed)
            GTEST_SKIP() << "the open-file hard limit is " << limit.rlim_max << "; " << needed
                         << " descriptors are needed for " << kConnections << " connections";
        limit.rlim_cur = needed;
        ASSERT_EQ(setrlimit(RLIMIT_NOFILE, &limit), 0);
    }
    struct Restore {
        rlimit limit;
        ~Restore() { setrlimit(RLIMIT_NOFILE, &limit); }
    } restore{before};

    TestServer server(db, model, false, std::size_t(32) << 20, std::chrono::seconds(3),
                      std::chrono::seconds(3));
    const std::string body = multipart_body(phantom_png());
    const std::string partial_upload = predict_head(body.size()) + body.substr(0, 1000);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<std::uint16_t>(server.port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    const auto opened = Clock::now();
    std::vector<pollfd> fds;
    for (std::size_t i = 0; i < kConnections; ++i) {  // non-blocking: a full backlog never stalls
        const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        ASSERT_GE(fd, 0) << "socket " << i << ": " << std::strerror(errno);
        fds.push_back({fd, POLLOUT, 0});
        connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr);  // EINPROGRESS is fine
    }
    struct CloseAll {
        std::vector<pollfd>& fds;
        ~CloseAll() {
            for (const pollfd& p : fds) close(p.fd < 0 ? ~p.fd : p.fd);
        }
    } close_all{fds};
    // Connected once writable; then the bytes each third sends.
    std::vector<int> kind(kConnections, -1);  // 0 half a request line, 1 half an upload, 2 nothing
    for (int round = 0; round < 50; ++round) {  // bounded: 5 s
        std::size_t waiting = 0;
        for (std::size_t i = 0; i < kConnections; ++i) waiting += kind[i] < 0;
        if (waiting == 0) break;
        poll(fds.data(), fds.size(), 100);
        for (std::size_t i = 0; i < kConnections; ++i) {
            if (kind[i] >= 0 || !(fds[i].revents & POLLOUT)) continue;
            kind[i] = static_cast<int>(i % 3);
            const std::string bytes = kind[i] == 0   ? std::string("GET /healthz HTTP/1.1\r\nHo")
                                      : kind[i] == 1 ? partial_upload
                                                     : std::string();
            if (!bytes.empty())
                EXPECT_EQ(send(fds[i].fd, bytes.data(), bytes.size(), MSG_NOSIGNAL),
                          static_cast<ssize_t>(bytes.size()));
            fds[i].events = POLLIN;
        }
    }
    for (std::size_t i = 0; i < kConnections; ++i)
        ASSERT_GE(kind[i], 0) << "connection " << i << " did not connect within 5 s";

    // Meanwhile, with all of them open, a normal request and an upload are answered.
    const auto asked = Clock::now();
    EXPECT_EQ(expect_json(server.client()->Get("/healthz"), 200)["status"], "ok");
    EXPECT_LT(seconds_since(asked), 1.0) << "GET /healthz beside 1,000 open connections";
    EXPECT_LT(seconds_since(opened), 3.0) << "the 1,000 connections were no longer all open";

    // Then each is answered or closed by the server, at the deadline.
    std::vector<std::string> answers(kConnections);
    std::vector<bool> ended(kConnections, false);
    std::size_t open = kConnections;
    const auto waiting = Clock::now();
    while (open > 0 && seconds_since(waiting) < 9.0) {  // bounded
        poll(fds.data(), fds.size(), 100);
        for (std::size_t i = 0; i < kConnections; ++i) {
            if (ended[i] || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            char buf[4096];
            for (;;) {
                const ssize_t n = recv(fds[i].fd, buf, sizeof buf, 0);
                if (n > 0) {
                    answers[i].append(buf, static_cast<std::size_t>(n));
                    continue;
                }
                if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
                ended[i] = true;  // closed, or reset
                // A negative descriptor is one poll skips: a hung-up socket reports POLLHUP
                // whatever its events, and would end every later poll at once.
                fds[i].fd = ~fds[i].fd;
                --open;
                break;
            }
        }
    }
    const double held = seconds_since(opened);
    EXPECT_EQ(open, 0u) << open << " connections still open " << held << " s after opening";
    EXPECT_GT(held, 2.5) << "connections were cut before the deadline";
    EXPECT_LT(held, 7.0);
    std::size_t timed_out = 0, closed_silently = 0;
    for (std::size_t i = 0; i < kConnections; ++i) {
        if (kind[i] == 2) {
            closed_silently += ended[i] && answers[i].empty();
        } else {
            timed_out += raw_status(answers[i]) == 408;
            EXPECT_TRUE(answers[i].empty() || raw_status(answers[i]) == 408) << answers[i];
        }
    }
    EXPECT_EQ(timed_out, 2 * kConnections / 3 + 1) << "connections that sent part of a request "
                                                      "and were answered 408";
    EXPECT_EQ(closed_silently, kConnections / 3) << "silent connections closed without an answer";
    EXPECT_TRUE(answers_healthz(server.port, std::chrono::seconds(5)));
    EXPECT_EQ(stored_cases(server), 0u);
    EXPECT_EQ(image_files(dir / "cases-images"), 0u);
}

TEST(CaseStore, MigratesOnceAndRefusesNewerOrForeignFiles) {
    ScratchDir dir("case-store");
    {
        auto store = boneage::open_sqlite_case_store(dir / "a.db");
        boneage::NewCase c;
        c.status = "ok";
        c.image_ext = "png";
        c.bone_age_months = 100.0;
        c.result_json = "{}";
        EXPECT_EQ(store->add_case(c), 1);
        EXPECT_FALSE(store->save_review(2, {"x", 1.0, false, "", ""}));
        // A failure while placing the files leaves no case behind.
        EXPECT_THROW(store->add_case(c, [](std::int64_t) { throw std::runtime_error("disk"); }),
                     std::runtime_error);
        EXPECT_EQ(store->recent(10).size(), 1u);
        EXPECT_TRUE(fs::is_directory(dir / "a-images"));
    }
    auto again = boneage::open_sqlite_case_store(dir / "a.db");  // no migration runs twice
    EXPECT_EQ(again->recent(10).size(), 1u);
    again.reset();

    {
        // A file a newer build has migrated further.
        sqlite3* raw = nullptr;
        ASSERT_EQ(sqlite3_open((dir / "a.db").c_str(), &raw), SQLITE_OK);
        EXPECT_EQ(sqlite3_exec(raw, "PRAGMA user_version = 99", nullptr, nullptr, nullptr),
                  SQLITE_OK);
        sqlite3_close(raw);
    }
    try {
        boneage::open_sqlite_case_store(dir / "a.db");
        ADD_FAILURE() << "a database of a newer schema was opened";
    } catch (const boneage::Error& e) {
        EXPECT_NE(std::string(e.what()).find("schema version 99"), std::string::npos) << e.what();
    }
    std::ofstream(dir / "not.db") << std::string(4096, 'x');
    try {
        boneage::open_sqlite_case_store(dir / "not.db");
        ADD_FAILURE() << "a file that is not a database was opened";
    } catch (const boneage::Error& e) {
        EXPECT_NE(std::string(e.what()).find("not.db"), std::string::npos) << e.what();
    }
}

// ---- the CLI as a process ----

namespace {

// `boneage serve` started in the background with stdout to a file; the port read back from it.
struct ServeProcess {
    pid_t pid = -1;
    int port = 0;

    ServeProcess(const fs::path& scratch, const std::vector<std::string>& args) {
        const fs::path out = scratch / "serve.out";
        std::vector<std::string> argv_s = {BONEAGE_CLI, "serve", "--port", "0"};
        argv_s.insert(argv_s.end(), args.begin(), args.end());
        std::vector<char*> argv;
        for (std::string& s : argv_s) argv.push_back(s.data());
        argv.push_back(nullptr);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                         0644);
        posix_spawn_file_actions_addopen(&actions, 2, (scratch / "serve.err").c_str(),
                                         O_WRONLY | O_CREAT | O_TRUNC, 0644);
        EXPECT_EQ(posix_spawn(&pid, argv[0], &actions, nullptr, argv.data(), environ), 0);
        posix_spawn_file_actions_destroy(&actions);
        const std::regex listening("listening on http://127\\.0\\.0\\.1:(\\d+)/");
        for (int i = 0; i < 600 && port == 0; ++i) {  // at most a minute to load the model
            std::smatch m;
            std::string text = read_file(out);
            if (std::regex_search(text, m, listening))
                port = std::stoi(m[1].str());
            else
                std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        EXPECT_NE(port, 0) << read_file(scratch / "serve.err");
    }
    // Sends `sig` and returns the exit status (-signal when killed), waiting at most 30 s.
    int finish(int sig) {
        kill(pid, sig);
        for (int i = 0; i < 300; ++i) {
            int status = 0;
            if (waitpid(pid, &status, WNOHANG) == pid) {
                pid = -1;
                return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        return 999;
    }
    ~ServeProcess() {
        if (pid > 0) finish(SIGKILL);
    }
};

}  // namespace

TEST_F(Serve, TheCliStopsCleanlyOnSigtermAndAKillLosesNoCommittedReview) {
    std::string id;
    {
        ServeProcess serve(dir.path(), {"--model", model.string(), "--db", db.string(),
                                        "--accept-all", "--threads", "2"});
        ASSERT_NE(serve.port, 0);
        httplib::Client c("127.0.0.1", serve.port);
        c.set_read_timeout(120);
        json j = expect_json(post_image(c, phantom_png(), {{"sex", "male", "", ""}}), 200);
        id = std::to_string(j["case_id"].get<std::int64_t>());
        expect_json(c.Put("/v1/cases/" + id + "/review", R"({"reader": "Dr K", "agrees": true})",
                          "application/json"),
                    200);
        EXPECT_EQ(serve.finish(SIGKILL), -SIGKILL);
    }
    {
        auto store = boneage::open_sqlite_case_store(db);
        std::optional<boneage::Case> c = store->get_case(std::stoll(id));
        ASSERT_TRUE(c);
        ASSERT_TRUE(c->review);
        EXPECT_EQ(c->review->reader, "Dr K");
    }
    ServeProcess serve(dir.path(),
                       {"--model", model.string(), "--db", db.string(), "--accept-all"});
    ASSERT_NE(serve.port, 0);
    httplib::Client c("127.0.0.1", serve.port);
    EXPECT_EQ(expect_json(c.Get("/v1/cases/" + id), 200)["review"]["reader"], "Dr K");
    EXPECT_EQ(serve.finish(SIGTERM), 0) << read_file(dir / "serve.err");
    EXPECT_NE(read_file(dir / "serve.err").find("stopped"), std::string::npos);
}
