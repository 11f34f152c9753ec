// A small W3C WebDriver client (https://www.w3.org/TR/webdriver2/) over httplib, for driving
// headless Chromium through chromedriver in the tests: open a page, find elements, type,
// click, read text, run a script, take a screenshot. The driver runs in a process group of
// its own, and the group (the browser with it) is killed when the object dies, whatever
// happened in between.
//
//   auto driver = boneage::test::WebDriver::start("/usr/bin/chromedriver", "/usr/bin/chromium",
//                                                  scratch / "profile", scratch / "driver.log");
//   driver->open("http://127.0.0.1:8080/");
//   driver->type(driver->find("#reader"), "Dr A");
//   std::string png = driver->screenshot();
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace boneage::test {

// A loopback port nobody listens on now (the kernel's pick; free again once closed).
inline int free_loopback_port() {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof addr;
    int port = 0;
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &length) == 0)
        port = ntohs(addr.sin_port);
    close(fd);
    return port;
}

// Standard base64 (RFC 4648) to bytes; stops at the first character outside the alphabet.
inline std::string base64_decode(const std::string& text) {
    auto value = [](char c) -> int {
        if (c >= 'A' && c <= 'Z') return c - 'A';
        if (c >= 'a' && c <= 'z') return c - 'a' + 26;
        if (c >= '0' && c <= '9') return c - '0' + 52;
        if (c == '+') return 62;
        if (c == '/') return 63;
        return -1;
    };
    std::string out;
    unsigned bits = 0;
    int count = 0;
    for (char c : text) {
        const int v = value(c);
        if (v < 0) break;
        bits = (bits << 6) | static_cast<unsigned>(v);
        count += 6;
        if (count >= 8) {
            count -= 8;
            out += static_cast<char>((bits >> count) & 0xff);
        }
    }
    return out;
}

class WebDriver {
public:
    using Clock = std::chrono::steady_clock;

    // Starts `chromedriver` on a free loopback port and a headless `browser` session with
    // `profile` as its user-data-dir and a laptop-sized window. Throws std::runtime_error
    // saying what failed (the driver's log is in `log`).
    static std::unique_ptr<WebDriver> start(const std::filesystem::path& chromedriver,
                                            const std::filesystem::path& browser,
                                            const std::filesystem::path& profile,
                                            const std::filesystem::path& log, int width = 1366,
                                            int height = 900) {
        std::unique_ptr<WebDriver> d(new WebDriver());
        d->port_ = free_loopback_port();
        std::vector<std::string> args = {chromedriver.string(),
                                         "--port=" + std::to_string(d->port_),
                                         "--log-path=" + log.string()};
        std::vector<char*> argv;
        for (std::string& a : args) argv.push_back(a.data());
        argv.push_back(nullptr);
        posix_spawn_file_actions_t actions;
        posix_spawn_file_actions_init(&actions);
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0);
        posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0);
        posix_spawnattr_t attributes;
        posix_spawnattr_init(&attributes);
        posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETPGROUP);
        posix_spawnattr_setpgroup(&attributes, 0);  // a group of its own: the browser joins it
        const int spawned =
            posix_spawn(&d->pid_, argv[0], &actions, &attributes, argv.data(), environ);
        posix_spawn_file_actions_destroy(&actions);
        posix_spawnattr_destroy(&attributes);
        if (spawned != 0) throw std::runtime_error("cannot start " + chromedriver.string());

        d->http_ = std::make_unique<httplib::Client>("127.0.0.1", d->port_);
        d->http_->set_connection_timeout(2);
        d->http_->set_read_timeout(60);
        const auto ready_by = Clock::now() + std::chrono::seconds(20);
        bool ready = false;
        while (!ready && Clock::now() < ready_by) {
            auto r = d->http_->Get("/status");
            const nlohmann::json j =
                r ? nlohmann::json::parse(r->body, nullptr, false) : nlohmann::json();
            ready = j.is_object() && j.contains("value") && j["value"].is_object() &&
                    j["value"].value("ready", false);
            if (!ready) std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        if (!ready) throw std::runtime_error("chromedriver did not answer /status within 20 s");

        const nlohmann::json capabilities = {
            {"capabilities",
             {{"alwaysMatch",
               {{"browserName", "chrome"},
                {"goog:chromeOptions",
                 {{"binary", browser.string()},
                  {"args",
                   {"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--hide-scrollbars", "--user-data-dir=" + profile.string(),
                    "--window-size=" + std::to_string(width) + "," +
                        std::to_string(height)}}}}}}}}};
        d->session_ = d->call("POST", "/session", capabilities)["sessionId"].get<std::string>();
        return d;
    }

    ~WebDriver() {
        if (!session_.empty()) {
            http_->set_read_timeout(10);
            http_->Delete("/session/" + session_);  // closes the browser
        }
        if (pid_ > 0) {
            kill(-pid_, SIGTERM);
            const auto until = Clock::now() + std::chrono::seconds(5);
            int status = 0;
            while (waitpid(pid_, &status, WNOHANG) == 0 && Clock::now() < until)
                std::this_thread::sleep_for(std::chrono::milliseconds(50));
            kill(-pid_, SIGKILL);  // whatever of the group is left, the browser included
            waitpid(pid_, &status, WNOHANG);
        }
    }

    void open(const std::string& url) { command("POST", "/url", {{"url", url}}); }

    // The element matching the CSS selector; throws when there is none.
    std::string find(const std::string& css) {
        const nlohmann::json v =
            command("POST", "/element", {{"using", "css selector"}, {"value", css}});
        return v.at(kElement).get<std::string>();
    }
    // Types `text` into the element; for a file input, `text` is the file's path.
    void type(const std::string& element, const std::string& text) {
        command("POST", "/element/" + element + "/value", {{"text", text}});
    }
    void click(const std::string& element) {
        command("POST", "/element/" + element + "/click", nlohmann::json::object());
    }
    // The element's text as rendered ("" while it is hidden).
    std::string text(const std::string& element) {
        return command("GET", "/element/" + element + "/text").get<std::string>();
    }
    // Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    nlohmann::json script(const std::string& script,
                          const nlohmann::json& args = nlohmann::json::array()) {
        return command("POST", "/execute/sync", {{"script", script}, {"args", args}});
    }
    // Resizes the browser's window (the viewport is the window in headless mode).
    void resize(int width, int height) {
        command("POST", "/window/rect", {{"width", width}, {"height", height}});
    }
    // The viewport as PNG bytes.
    std::string screenshot() {
        return base64_decode(command("GET", "/screenshot").get<std::string>());
    }

    // Polls `ready` every 100 ms until it returns true or `limit` passes; whether it did.
    // Errors from the driver while waiting (an element not there yet) count as "not yet".
    bool wait_until(std::chrono::milliseconds limit, const std::function<bool()>& ready) {
        const auto until = Clock::now() + limit;
        for (;;) {
            try {
                if (ready()) return true;
            } catch (const std::exception&) {
            }
            if (Clock::now() >= until) return false;
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
    }

private:
    static constexpr const char* kElement = "element-6066-11e4-a52e-4f735466cecf";

    WebDriver() = default;

    nlohmann::json command(const std::string& method, const std::string& path,
                           const nlohmann::json& body = nullptr) {
        return call(method, "/session/" + session_ + path, body);
    }

    // One WebDriver call; its "value", or std::runtime_error with the driver's message.
    nlohmann::json call(const std::string& method, const std::string& path,
                        const nlohmann::json& body) {
        httplib::Result r =
            method == "GET" ? http_->Get(path) : http_->Post(path, body.dump(), "application/json");
        if (!r)
            throw std::runtime_error(method + " " + path + ": no answer from chromedriver: " +
                                     httplib::to_string(r.error()));
        nlohmann::json j = nlohmann::json::parse(r->body, nullptr, false);
        if (r->status != 200 || !j.is_object() || !j.contains("value"))
            throw std::runtime_error(method + " " + path + ": " + std::to_string(r->status) + " " +
                                     r->body.substr(0, 500));
        return j["value"];
    }

    pid_t pid_ = -1;
    int port_ = 0;
    std::unique_ptr<httplib::Client> http_;
    std::string session_;
};

}  // namespace boneage::test
