// Load on a running `boneage serve`: N POST /v1/predict from C concurrent clients (one
// keep-alive connection each), cycling through the given image files. Prints the errors, the
// p50/p99 latency, the throughput, and the server's resident memory (VmRSS of --pid) after the
// first 100 answers and at the end. The images are hands: an answer the hand gate rejected
// counts as an error. scripts/serve-load starts the server and calls this.
//
//   bench-serve-load --port 8080 --pid 1234 -n 2000 -c 16 phantoms/*.png
#include <fmt/format.h>
#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace {

// VmRSS of `pid` in KiB, from /proc; -1 when it cannot be read.
long rss_kib(long pid) {
    std::ifstream in(fmt::format("/proc/{}/status", pid));
    std::string line;
    while (std::getline(in, line))
        if (line.rfind("VmRSS:", 0) == 0) return std::strtol(line.c_str() + 6, nullptr, 10);
    return -1;
}

std::string read_file(const std::string& file) {
    std::ifstream in(file, std::ios::binary);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

double percentile(std::vector<double> v, double p) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    const std::size_t i = std::min(v.size() - 1, static_cast<std::size_t>(p * (v.size() - 1) + 0.5));
    return v[i];
}

// The "status" of a predict answer ("ok", "rejected"), or what was wrong with it.
std::string answer_status(const std::string& body) {
    const nlohmann::json j = nlohmann::json::parse(body, nullptr, false);
    if (!j.is_object() || !j.contains("status") || !j["status"].is_string())
        return "missing (not a case)";
    return j["status"].get<std::string>();
}

int usage() {
    std::cerr << "usage: bench-serve-load --port P [--pid PID] [-n N] [-c CLIENTS] IMAGE...\n";
    return 2;
}

}  // namespace

int main(int argc, char** argv) {
    int port = 0;
    long pid = 0;
    long n = 2000;
    int clients = 16;
    std::vector<std::string> files;
    for (int i = 1; i < argc; ++i) {
        const std::string a = argv[i];
        auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
        const char* v = nullptr;
        if (a == "--port" && (v = value()))
            port = std::atoi(v);
        else if (a == "--pid" && (v = value()))
            pid = std::atol(v);
        else if (a == "-n" && (v = value()))
            n = std::atol(v);
        else if (a == "-c" && (v = value()))
            clients = std::atoi(v);
        else if (!a.empty() && a[0] != '-')
            files.push_back(a);
        else
            return usage();
    }
    if (port <= 0 || n <= 0 || clients <= 0 || clients > 1024 || files.empty()) return usage();

    std::vector<std::string> images;
    for (const std::string& f : files) images.push_back(read_file(f));

    std::atomic<long> next{0}, answered{0};
    std::atomic<long> rss_first{-1};
    std::mutex mutex;  // guards latencies and errors
    std::vector<double> latencies;
    latencies.reserve(static_cast<std::size_t>(n));
    std::map<std::string, long> errors;

    const auto start = std::chrono::steady_clock::now();
    std::vector<std::thread> threads;
    for (int k = 0; k < clients; ++k)
        threads.emplace_back([&, k] {
            httplib::Client c("127.0.0.1", port);
            c.set_connection_timeout(10);
            c.set_read_timeout(300);
            c.set_write_timeout(60);
            c.set_keep_alive(true);
            for (long i = next++; i < n; i = next++) {  // bounded: N requests in all
                const std::string& image = images[static_cast<std::size_t>(i) % images.size()];
                httplib::MultipartFormDataItems items{
                    {"file", image, "hand.png", "image/png"},
                    {"sex", (i + k) % 2 ? "male" : "female", "", ""}};
                const auto t0 = std::chrono::steady_clock::now();
                auto r = c.Post("/v1/predict", items);
                const double ms =
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                        .count();
                {
                    std::lock_guard<std::mutex> lock(mutex);
                    if (!r)
                        ++errors["no answer: " + httplib::to_string(r.error())];
                    else if (r->status != 200)
                        ++errors[fmt::format("HTTP {}", r->status)];
                    else if (const std::string status = answer_status(r->body); status != "ok")
                        ++errors["HTTP 200, status " + status];
                    else
                        latencies.push_back(ms);
                }
                if (++answered == 100 && pid > 0) rss_first = rss_kib(pid);
            }
        });
    for (std::thread& t : threads) t.join();
    const double wall =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const long rss_end = pid > 0 ? rss_kib(pid) : -1;

    long error_count = 0;
    for (const auto& [what, count] : errors) error_count += count;
    std::cout << fmt::format("requests   {} from {} clients, {} images\n", n, clients,
                             images.size());
    std::cout << fmt::format("errors     {}\n", error_count);
    for (const auto& [what, count] : errors) std::cout << fmt::format("  {:6}  {}\n", count, what);
    std::cout << fmt::format("latency    p50 {:.1f} ms, p99 {:.1f} ms, max {:.1f} ms (200s only)\n",
                             percentile(latencies, 0.50), percentile(latencies, 0.99),
                             percentile(latencies, 1.0));
    std::cout << fmt::format("throughput {:.1f} requests/s ({:.1f} s in all)\n", n / wall, wall);
    int rc = error_count > 0 ? 1 : 0;
    if (pid > 0) {
        const long first = rss_first.load();
        const double growth = first > 0 ? 100.0 * (rss_end - first) / first : 0.0;
        const bool within = first > 0 && rss_end > 0 && std::abs(growth) <= 10.0;
        std::cout << fmt::format(
            "server RSS {:.1f} MiB after the first 100, {:.1f} MiB at the end ({:+.1f}%: {})\n",
            first / 1024.0, rss_end / 1024.0, growth,
            within ? "within 10%" : "NOT within 10%");
        if (!within && rc == 0) rc = 3;
    }
    return rc;
}
