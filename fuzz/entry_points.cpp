// The fuzz targets' entry points (entry_points.hpp). The readers take files, so each input is
// written to one scratch file per process and read back from there; the HTTP input goes over a
// loopback connection to a server started once per process.
#include "entry_points.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boneage/dataset.hpp>
#include <boneage/error.hpp>
#include <boneage/image.hpp>
#include <boneage/model.hpp>

#include <fmt/format.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <thread>

#include "serve/http_server.hpp"
#include "serve/upload.hpp"

namespace boneage::fuzz {

namespace fs = std::filesystem;

namespace {

// A folder of this process's own under the temporary folder, removed at exit.
const fs::path& scratch_dir() {
    static const fs::path dir = [] {
        fs::path d = fs::temp_directory_path() / fmt::format("boneage-fuzz-{}", ::getpid());
        fs::create_directories(d);
        std::atexit([] {
            std::error_code ignored;
            fs::remove_all(scratch_dir(), ignored);
        });
        return d;
    }();
    return dir;
}

// The bytes as the file `name` in the scratch folder.
fs::path as_file(const std::uint8_t* data, std::size_t size, const std::string& name) {
    const fs::path file = scratch_dir() / name;
    std::ofstream out(file, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
    out.close();
    if (!out) throw Error(ErrorKind::Internal, file, "the fuzz input could not be written");
    return file;
}

// ---- HTTP ----

// A request's form as POST /v1/predict checks it, before any work: the upload in the field
// `file`, recognised by content, kept under a generated name and hashed, then removed.
void take_upload(const httplib::Request& req, httplib::Response& res, const fs::path& dir) {
    auto answer = [&](int status, const std::string& message) {
        res.status = status;
        res.set_content(fmt::format("{{\"error\":\"{}\"}}\n", message), "application/json");
    };
    if (!req.is_multipart_form_data()) return answer(415, "not multipart/form-data");
    if (!req.has_file("file")) return answer(400, "no file field");
    const httplib::MultipartFormData& upload = req.get_file_value("file");
    if (upload.content.empty()) return answer(400, "empty file");
    if (req.has_file("sex")) (void)parse_sex(req.get_file_value("sex").content);
    const std::string name = serve::display_name(upload.filename);
    const std::string ext = serve::image_extension(upload.content);
    if (ext.empty()) return answer(422, "not an image");
    const fs::path stored = serve::write_upload(dir, upload.content, ext);
    const std::string digest = serve::file_sha256(stored);
    fs::remove(stored);
    res.set_content(fmt::format("{{\"name\":\"{}\",\"ext\":\"{}\",\"sha256\":\"{}\"}}\n",
                                name.size(), ext, digest),
                    "application/json");
}

// The server and its thread, made on first use and kept for the life of the process.
struct LoopbackServer {
    serve::HttpServer server;
    std::thread thread;
    int port = 0;
    fs::path uploads;

    LoopbackServer() {
        uploads = scratch_dir() / "uploads";
        fs::create_directories(uploads);
        serve::HttpServerOptions options;
        // Short, so an input that leaves a request half sent ends quickly.
        options.request_timeout = std::chrono::milliseconds(2000);
        options.io_timeout = std::chrono::milliseconds(1000);
        options.threads = 2;
        server.configure(options);
        server.set_payload_max_length(std::size_t(1) << 20);  // as the service: uploads capped
        server.Get("/healthz", [](const httplib::Request&, httplib::Response& res) {
            res.set_content("{\"status\":\"ok\"}\n", "application/json");
        });
        server.Post("/v1/predict", [this](const httplib::Request& req, httplib::Response& res) {
            take_upload(req, res, uploads);
        });
        server.Put(R"(/v1/cases/(\d+)/review)",
                   [](const httplib::Request& req, httplib::Response& res) {
                       res.set_content(req.matches[1].str() + " " + req.body.substr(0, 16),
                                       "text/plain");
                   });
        port = server.bind_to_any_port("127.0.0.1");
        if (port <= 0) throw Error(ErrorKind::Internal, "cannot bind a loopback port");
        thread = std::thread([this] { server.serve(); });
        for (int i = 0; i < 5000 && !server.is_running(); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ~LoopbackServer() {
        server.stop();
        if (thread.joinable()) thread.join();
    }
};

std::mutex http_mutex;
std::unique_ptr<LoopbackServer> http;

LoopbackServer& loopback() {
    std::lock_guard<std::mutex> lock(http_mutex);
    if (!http) http = std::make_unique<LoopbackServer>();
    return *http;
}

// Sends everything, reading the answers meanwhile so that neither side waits on a full
// buffer; then half-closes and reads until the server closes. Returns what the server sent.
std::string exchange(int fd, const std::uint8_t* data, std::size_t size) {
    using Clock = std::chrono::steady_clock;
    const Clock::time_point deadline = Clock::now() + std::chrono::seconds(20);
    std::size_t sent = 0;
    bool half_closed = false;
    char buffer[16384];
    std::string answer;
    for (;;) {
        if (sent == size && !half_closed) {
            ::shutdown(fd, SHUT_WR);
            half_closed = true;
        }
        pollfd p{fd, static_cast<short>(POLLIN | (half_closed ? 0 : POLLOUT)), 0};
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
        if (left <= 0) throw Error(ErrorKind::Internal, "the server neither answered nor closed");
        if (::poll(&p, 1, static_cast<int>(left)) < 0) continue;
        if (p.revents & POLLIN) {
            const ssize_t n = ::recv(fd, buffer, sizeof buffer, 0);
            if (n <= 0) return answer;  // closed (or reset) by the server: the exchange is over
            if (answer.size() < (std::size_t(1) << 20)) answer.append(buffer, std::size_t(n));
        }
        if (!half_closed && (p.revents & POLLOUT)) {
            const ssize_t n = ::send(fd, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (n > 0)
                sent += static_cast<std::size_t>(n);
            else if (n < 0 && errno != EAGAIN && errno != EINTR)
                return answer;  // the server closed while the request was being sent
        }
        if (p.revents & (POLLERR | POLLHUP) && !(p.revents & POLLIN)) return answer;
    }
}

}  // namespace

void read_image(const std::uint8_t* data, std::size_t size) {
    read_radiograph(as_file(data, size, "image"));
}

void read_dicom(const std::uint8_t* data, std::size_t size) {
    read_radiograph(as_file(data, size, "image.dcm"));
}

void read_labels(const std::uint8_t* data, std::size_t size) {
    const fs::path file = as_file(data, size, "labels.csv");
    // Each reading refuses on its own; one refusing says nothing of the others.
    try {
        boneage::read_labels(file, /*strict=*/false);
    } catch (const Error& e) {
        if (e.kind() == ErrorKind::Internal) throw;
    }
    try {
        boneage::read_labels(file, /*strict=*/true);
    } catch (const Error& e) {
        if (e.kind() == ErrorKind::Internal) throw;
    }
    read_manifest(file);
}

void load_model_file(const std::uint8_t* data, std::size_t size) {
    load_model(as_file(data, size, "model.bin"));
}

void open_prepared_cache(const std::uint8_t* data, std::size_t size) {
    const PreparedCache cache(as_file(data, size, "cache.bin"));
    const std::size_t pixels = std::size_t(cache.image_size()) * std::size_t(cache.image_size());
    unsigned sum = 0;
    for (std::size_t i = 0; i < cache.size(); ++i) {
        const std::uint8_t* image = cache.image(i);
        for (std::size_t k = 0; k < pixels; k += 61) sum += image[k];
        sum += image[pixels - 1];
        sum += static_cast<unsigned>(cache.id(i).size() + cache.male(i));
        if (!(cache.age_months(i) == cache.age_months(i))) ++sum;  // NaN allowed through
    }
    if (sum == 1u << 31) std::abort();  // keeps the reads from being optimised away
}

void serve_http(const std::uint8_t* data, std::size_t size) { exchange_http(data, size); }

std::string exchange_http(const std::uint8_t* data, std::size_t size) {
    const int port = loopback().port;
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw Error(ErrorKind::Internal, "cannot open a socket");
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<std::uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
        const int error = errno;
        ::close(fd);
        throw Error(ErrorKind::Internal,
                    std::string("cannot connect to the loopback server: ") + std::strerror(error));
    }
    // Closed with a reset once the exchange is over: thousands of connections a second would
    // otherwise leave as many in TIME_WAIT and run the loopback out of ports within a minute.
    const linger reset{1, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof reset);
    std::string answer;
    try {
        answer = exchange(fd, data, size);
    } catch (...) {
        ::close(fd);
        throw;
    }
    ::close(fd);
    return answer;
}

void stop_http() {
    std::lock_guard<std::mutex> lock(http_mutex);
    http.reset();
}

const std::vector<Target>& targets() {
    static const std::vector<Target> all = {
        {"image", read_image},          {"dicom", read_dicom},
        {"labels", read_labels},        {"model", load_model_file},
        {"cache", open_prepared_cache}, {"http", serve_http},
    };
    return all;
}

void run_checked(EntryPoint run, const std::uint8_t* data, std::size_t size) {
    try {
        run(data, size);
    } catch (const Error& e) {
        if (e.kind() != ErrorKind::Internal) return;
        std::fprintf(stderr, "boneage::Error of kind Internal: %s\n", e.what());
        std::abort();
    }
}

}  // namespace boneage::fuzz
