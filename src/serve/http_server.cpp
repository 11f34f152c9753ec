// The intake: one thread polls every connection and buffers each request until it is whole;
// pool threads then hand it to httplib's parser and routes through a stream over the buffer.
#include "serve/http_server.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boneage/error.hpp>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <deque>
#include <mutex>
#include <nlohmann/json.hpp>
#include <thread>
#include <unordered_map>
#include <vector>

namespace boneage::serve {

namespace {

using Clock = std::chrono::steady_clock;

// The longest head (request line and headers) taken; httplib refuses lines over 8 KB anyway.
constexpr std::size_t kMaxHead = 64 * 1024;
// Requests answered on one keep-alive connection before the service closes it.
constexpr int kMaxRequestsPerConnection = 100;
// How long a refused connection is kept, reading and dropping, after its answer: closing a
// socket with unread bytes resets it, and the reset can destroy the answer before the client
// has read it.
constexpr std::chrono::seconds kLinger{2};
// The body budget when neither the options nor the payload limit give one.
constexpr std::size_t kDefaultBudgetPerThread = std::size_t(256) << 20;

struct Connection {
    int fd = -1;
    std::string bytes;           // received and not yet read by httplib
    std::size_t consumed = 0;    // of `bytes`, read by httplib (pool thread)
    Clock::time_point deadline;  // the request must be whole by then
    std::size_t head_end = 0;    // the head's length with its blank line; 0 until it is whole
    std::size_t searched = 0;    // of `bytes`, searched for the head's end without finding it
    std::size_t body = 0;        // Content-Length
    bool chunked = false;        // the body's length is not in the head: httplib reads it
    bool continue_owed = false;  // the client awaits "100 Continue" before sending the body
    std::size_t reserved = 0;    // body bytes counted against the budget
    bool paused = false;         // the head is whole; the body waits for the budget
    bool refused = false;        // answered by the intake; what else arrives is dropped
    int answered = 0;            // requests answered on this connection
};

bool iequals(const char* a, const char* b, std::size_t n) {
    for (std::size_t i = 0; i < n; ++i)
        if (std::tolower(static_cast<unsigned char>(a[i])) !=
            std::tolower(static_cast<unsigned char>(b[i])))
            return false;
    return true;
}

std::string trim(const std::string& s) {
    const std::size_t first = s.find_first_not_of(" \t");
    if (first == std::string::npos) return {};
    return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

std::string request_method(const std::string& bytes) {
    const std::size_t end = bytes.find(' ');
    std::string m = bytes.substr(0, std::min<std::size_t>(end, 16));
    for (char c : m)
        if (c < 'A' || c > 'Z') return {};
    return end == std::string::npos ? std::string() : m;
}

const char* reason(int status) {
    switch (status) {
        case 408:
            return "Request Timeout";
        case 413:
            return "Payload Too Large";
        case 431:
            return "Request Header Fields Too Large";
        case 503:
            return "Service Unavailable";
        default:
            return "Error";
    }
}

// Sends what fits in the socket's buffer now; the intake never waits on a client.
void send_now(int fd, const std::string& bytes) {
    [[maybe_unused]] ssize_t n = ::send(fd, bytes.data(), bytes.size(), MSG_NOSIGNAL);
}

// Waits until `fd` is ready for `events`: false after the I/O timeout without a byte, or at
// `deadline`, whichever comes first.
bool wait_for(int fd, short events, std::chrono::milliseconds io_timeout,
              Clock::time_point deadline) {
    const Clock::time_point until = std::min(deadline, Clock::now() + io_timeout);
    for (;;) {
        const auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now()).count();
        if (left <= 0) return false;
        pollfd p{fd, events, 0};
        const int n = ::poll(&p, 1, static_cast<int>(left));
        if (n > 0) return true;
        if (n == 0 || errno != EINTR) return false;
    }
}

void peer_address(int fd, bool remote, std::string& ip, int& port) {
    sockaddr_storage addr{};
    socklen_t length = sizeof addr;
    auto* a = reinterpret_cast<sockaddr*>(&addr);
    if ((remote ? ::getpeername(fd, a, &length) : ::getsockname(fd, a, &length)) != 0) return;
    char host[NI_MAXHOST], service[NI_MAXSERV];
    if (::getnameinfo(a, length, host, sizeof host, service, sizeof service,
                      NI_NUMERICHOST | NI_NUMERICSERV) == 0) {
        ip = host;
        port = std::atoi(service);
    }
}

// httplib's view of a connection on a pool thread: the buffered request first, then (for a
// chunked body) the socket, every wait bounded by the request's deadline; the answer is
// written within the request timeout of its first byte.
class ConnectionStream final : public httplib::Stream {
public:
    ConnectionStream(Connection& c, const HttpServerOptions& options) : c_(c), o_(options) {}

    bool is_readable() const override {
        return c_.consumed < c_.bytes.size() || wait_for(c_.fd, POLLIN, o_.io_timeout, c_.deadline);
    }
    bool is_writable() const override {
        return wait_for(c_.fd, POLLOUT, o_.io_timeout, write_deadline());
    }
    ssize_t read(char* ptr, size_t size) override {
        if (c_.consumed < c_.bytes.size()) {
            const std::size_t n = std::min(size, c_.bytes.size() - c_.consumed);
            std::memcpy(ptr, c_.bytes.data() + c_.consumed, n);
            c_.consumed += n;
            return static_cast<ssize_t>(n);
        }
        for (;;) {
            const ssize_t n = ::recv(c_.fd, ptr, size, 0);
            if (n >= 0) return n;
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
            if (!wait_for(c_.fd, POLLIN, o_.io_timeout, c_.deadline)) return -1;
        }
    }
    ssize_t write(const char* ptr, size_t size) override {
        const Clock::time_point deadline = write_deadline();
        for (;;) {
            const ssize_t n = ::send(c_.fd, ptr, size, MSG_NOSIGNAL);
            if (n >= 0) return n;
            if (errno == EINTR) continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
            if (!wait_for(c_.fd, POLLOUT, o_.io_timeout, deadline)) return -1;
        }
    }
    void get_remote_ip_and_port(std::string& ip, int& port) const override {
        peer_address(c_.fd, true, ip, port);
    }
    void get_local_ip_and_port(std::string& ip, int& port) const override {
        peer_address(c_.fd, false, ip, port);
    }
    socket_t socket() const override { return c_.fd; }

private:
    Clock::time_point write_deadline() const {
        if (!write_started_) {
            write_deadline_ = Clock::now() + o_.request_timeout;
            write_started_ = true;
        }
        return write_deadline_;
    }

    Connection& c_;
    const HttpServerOptions& o_;
    mutable bool write_started_ = false;
    mutable Clock::time_point write_deadline_;
};

// httplib's accept loop hands every socket to a task queue; this one passes it straight on to
// the intake, which never blocks.
class HandOver final : public httplib::TaskQueue {
public:
    void enqueue(std::function<void()> fn) override { fn(); }
    void shutdown() override {}
};

}  // namespace

struct HttpServer::Intake {
    HttpServer& server;
    HttpServerOptions options;
    int epoll = -1;
    int wake_fd = -1;
    std::thread poller;
    std::vector<std::thread> pool;
    std::atomic<std::size_t> open{0};

    std::mutex mutex;  // guards the members down to the next comment
    std::condition_variable ready_cv;
    std::deque<std::unique_ptr<Connection>> inbox;  // accepted or answered, for the poller
    std::deque<std::unique_ptr<Connection>> ready;  // whole requests, for the pool
    std::size_t budget_left = 0;
    bool stopping = false;   // no more requests taken; answered connections are closed
    bool pool_done = false;  // the poller has gone: the pool ends once `ready` is empty

    // The poller's own.
    std::unordered_map<int, std::unique_ptr<Connection>> parked;
    std::deque<int> waiting;  // paused connections, in the order their heads arrived

    explicit Intake(HttpServer& s) : server(s) {}

    void start();
    void stop();
    void admit(int fd);
    void wake() {
        const std::uint64_t one = 1;
        [[maybe_unused]] ssize_t n = ::write(wake_fd, &one, sizeof one);
    }
    void close_connection(Connection& c) {
        ::close(c.fd);
        --open;
    }

    // The poller.
    void poll_loop();
    void park(std::unique_ptr<Connection> c);
    void read_from(Connection& c);
    bool advance(Connection& c);
    bool read_head(Connection& c);
    bool reserve(Connection& c);
    void start_body(Connection& c);
    void dispatch(Connection& c);
    void refuse(Connection& c, int status, const std::string& message);
    void forget(Connection& c);
    void resume_waiting();
    int cut_expired();

    // The pool.
    void pool_loop();
    void answer(std::unique_ptr<Connection> c);
};

void HttpServer::Intake::start() {
    epoll = ::epoll_create1(EPOLL_CLOEXEC);
    wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (epoll < 0 || wake_fd < 0)
        throw Error(ErrorKind::Internal,
                    std::string("cannot create the HTTP intake's poller: ") + std::strerror(errno));
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = wake_fd;
    ::epoll_ctl(epoll, EPOLL_CTL_ADD, wake_fd, &e);
    const std::size_t per_thread = std::min(server.payload_max_length_, kDefaultBudgetPerThread);
    const std::size_t budget = options.body_budget
                                   ? options.body_budget
                                   : per_thread * static_cast<std::size_t>(options.threads);
    // Any body the payload limit allows fits when alone, so the first one waiting always goes.
    budget_left = std::max(budget, per_thread);
    poller = std::thread([this] { poll_loop(); });
    for (int i = 0; i < std::max(1, options.threads); ++i)
        pool.emplace_back([this] { pool_loop(); });
}

void HttpServer::Intake::stop() {
    {
        std::lock_guard<std::mutex> lock(mutex);
        stopping = true;
    }
    wake();
    if (poller.joinable()) poller.join();
    {
        std::lock_guard<std::mutex> lock(mutex);
        pool_done = true;
    }
    ready_cv.notify_all();
    for (std::thread& t : pool) t.join();
    pool.clear();
    for (auto& c : inbox) close_connection(*c);  // answered after the poller had gone
    inbox.clear();
    if (epoll >= 0) ::close(epoll);
    if (wake_fd >= 0) ::close(wake_fd);
    epoll = wake_fd = -1;
}

void HttpServer::Intake::admit(int fd) {
    ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    ::fcntl(fd, F_SETFD, FD_CLOEXEC);
    // Answers go out as a head and a body in two writes: without this the second waits for
    // the client's delayed acknowledgement of the first (tens of ms per request).
    const int yes = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &yes, sizeof yes);
    auto c = std::make_unique<Connection>();
    c->fd = fd;
    ++open;
    {
        std::lock_guard<std::mutex> lock(mutex);
        if (!stopping) {
            inbox.push_back(std::move(c));
            c = nullptr;
        }
    }
    if (c)
        close_connection(*c);
    else
        wake();
}

// ---- the poller ----

void HttpServer::Intake::poll_loop() {
    std::vector<epoll_event> events(256);
    int wait_ms = 0;
    for (;;) {
        const int n = ::epoll_wait(epoll, events.data(), static_cast<int>(events.size()), wait_ms);
        for (int i = 0; i < n; ++i) {
            const int fd = events[static_cast<std::size_t>(i)].data.fd;
            if (fd == wake_fd) {
                std::uint64_t count;
                [[maybe_unused]] ssize_t r = ::read(wake_fd, &count, sizeof count);
                continue;
            }
            auto it = parked.find(fd);  // absent: closed earlier in this round
            if (it != parked.end()) read_from(*it->second);
        }
        std::deque<std::unique_ptr<Connection>> arrivals;
        bool stop = false;
        {
            std::lock_guard<std::mutex> lock(mutex);
            arrivals.swap(inbox);
            stop = stopping;
        }
        for (auto& c : arrivals) {
            if (stop)
                close_connection(*c);
            else
                park(std::move(c));
        }
        if (stop) {
            // Requests still arriving will not be served: say so to those that began one.
            for (auto& [fd, c] : parked) {
                if (!c->refused && !c->bytes.empty())
                    refuse(*c, 503, "the service is stopping; send the request again shortly");
                close_connection(*c);
            }
            parked.clear();
            return;
        }
        resume_waiting();
        wait_ms = cut_expired();
    }
}

void HttpServer::Intake::park(std::unique_ptr<Connection> c) {
    c->deadline = Clock::now() + options.request_timeout;
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = c->fd;
    if (::epoll_ctl(epoll, EPOLL_CTL_ADD, c->fd, &e) != 0) {
        close_connection(*c);
        return;
    }
    Connection& ref = *c;
    parked[c->fd] = std::move(c);
    if (!ref.bytes.empty()) advance(ref);  // the next request came with the last one
}

void HttpServer::Intake::read_from(Connection& c) {
    if (c.paused) {  // not polled for input: an error or a hang-up
        forget(c);
        return;
    }
    char buffer[16384];
    for (int round = 0; round < 64; ++round) {  // then the others' turn; epoll comes back
        std::size_t want = sizeof buffer;
        if (c.refused)
            ;  // dropped, any amount
        else if (c.head_end)
            want = std::min(want, c.head_end + c.body - c.bytes.size());
        else
            want = std::min(want, kMaxHead + 1 - c.bytes.size());
        const ssize_t n = ::recv(c.fd, buffer, want, 0);
        if (n > 0) {
            if (c.refused) continue;
            c.bytes.append(buffer, static_cast<std::size_t>(n));
            if (!advance(c)) return;  // handed on, or refused
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        // The client closed (or reset) before its request was whole: nobody to answer.
        forget(c);
        return;
    }
}

// After bytes arrived: hands the request on once it is whole. False when the connection is no
// longer the poller's to read (handed on, refused or waiting for the budget).
bool HttpServer::Intake::advance(Connection& c) {
    if (c.paused || c.refused) return false;
    if (c.head_end == 0) {
        // From where the last search stopped: a head trickled a byte at a time is searched
        // once, not once per byte.
        const std::size_t end = c.bytes.find("\r\n\r\n", c.searched);
        if (end == std::string::npos) {
            c.searched = c.bytes.size() < 3 ? 0 : c.bytes.size() - 3;
            if (c.bytes.size() <= kMaxHead) return true;
            refuse(c, 431, fmt::format("the request's head is over {} KB", kMaxHead / 1024));
            return false;
        }
        c.head_end = end + 4;
        if (!read_head(c)) return false;
        if (c.body > 0 && !c.chunked && !reserve(c)) return false;
        start_body(c);
    }
    if (c.chunked || c.bytes.size() >= c.head_end + c.body) {
        dispatch(c);
        return false;
    }
    return true;
}

// Reads Content-Length, Transfer-Encoding and Expect from the head. False when the request is
// refused for its size.
bool HttpServer::Intake::read_head(Connection& c) {
    std::size_t line = c.bytes.find("\r\n") + 2;  // past the request line
    while (line < c.head_end - 2) {
        const std::size_t end = c.bytes.find("\r\n", line);
        const std::string text = c.bytes.substr(line, end - line);
        const std::size_t colon = text.find(':');
        const std::string value = colon == std::string::npos ? "" : trim(text.substr(colon + 1));
        auto is = [&](const char* name) {
            return colon == std::strlen(name) && iequals(text.data(), name, colon);
        };
        if (is("content-length")) {
            char* stop = nullptr;
            const unsigned long long n = std::strtoull(value.c_str(), &stop, 10);
            // A malformed length is httplib's to refuse; the intake reads no body for it.
            if (!value.empty() && *stop == '\0' && value[0] != '-') c.body = n;
        } else if (is("transfer-encoding")) {
            std::string v = value;
            std::transform(v.begin(), v.end(), v.begin(), ::tolower);
            c.chunked = v.find("chunked") != std::string::npos;
        } else if (is("expect")) {
            // The intake answers it (once the body has room); httplib must not answer again.
            std::string v = value;
            std::transform(v.begin(), v.end(), v.begin(), ::tolower);
            if (v == "100-continue") {
                c.continue_owed = true;
                c.bytes.erase(line, end + 2 - line);
                c.head_end -= end + 2 - line;
                continue;
            }
        }
        line = end + 2;
    }
    if (c.chunked) c.body = 0;
    if (c.body > server.payload_max_length_) {
        refuse(c, 413, "the request body is too large");
        return false;
    }
    return true;
}

// Counts the body against the budget; when it does not fit (or others wait before it) the
// connection stops being read until answers free room.
bool HttpServer::Intake::reserve(Connection& c) {
    {
        std::lock_guard<std::mutex> lock(mutex);
        if ((waiting.empty() || c.paused) && c.body <= budget_left) {
            budget_left -= c.body;
            c.reserved = c.body;
            c.paused = false;
            return true;
        }
    }
    if (!c.paused) {
        c.paused = true;
        waiting.push_back(c.fd);
        epoll_event e{};
        e.events = 0;  // still told of errors and hang-ups
        e.data.fd = c.fd;
        ::epoll_ctl(epoll, EPOLL_CTL_MOD, c.fd, &e);
    }
    return false;
}

void HttpServer::Intake::start_body(Connection& c) {
    if (c.continue_owed && c.bytes.size() < c.head_end + c.body)
        send_now(c.fd, "HTTP/1.1 100 Continue\r\n\r\n");
    c.continue_owed = false;
}

void HttpServer::Intake::resume_waiting() {
    while (!waiting.empty()) {
        auto it = parked.find(waiting.front());
        if (it == parked.end() || !it->second->paused) {  // closed, or cut at its deadline
            waiting.pop_front();
            continue;
        }
        Connection& c = *it->second;
        if (!reserve(c)) return;  // the first in line still does not fit
        waiting.pop_front();
        epoll_event e{};
        e.events = EPOLLIN;
        e.data.fd = c.fd;
        ::epoll_ctl(epoll, EPOLL_CTL_MOD, c.fd, &e);
        start_body(c);
        if (c.bytes.size() >= c.head_end + c.body) dispatch(c);
    }
}

void HttpServer::Intake::dispatch(Connection& c) {
    ::epoll_ctl(epoll, EPOLL_CTL_DEL, c.fd, nullptr);
    auto it = parked.find(c.fd);
    std::unique_ptr<Connection> owned = std::move(it->second);
    parked.erase(it);
    {
        std::lock_guard<std::mutex> lock(mutex);
        ready.push_back(std::move(owned));
    }
    ready_cv.notify_one();
}

// Answers `status` with {"error": message} itself, and keeps the connection a little, dropping
// what else arrives, before closing it.
void HttpServer::Intake::refuse(Connection& c, int status, const std::string& message) {
    const std::string body = nlohmann::json{{"error", message}}.dump() + "\n";
    send_now(c.fd, fmt::format("HTTP/1.1 {} {}\r\nContent-Type: application/json\r\n"
                               "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
                               status, reason(status), body.size(), body));
    ::shutdown(c.fd, SHUT_WR);
    if (options.on_refused) options.on_refused(request_method(c.bytes), status);
    {
        std::lock_guard<std::mutex> lock(mutex);
        budget_left += c.reserved;
    }
    c.reserved = 0;
    c.refused = true;
    c.paused = false;
    c.bytes.clear();
    c.bytes.shrink_to_fit();
    c.deadline = Clock::now() + kLinger;
    epoll_event e{};
    e.events = EPOLLIN;
    e.data.fd = c.fd;
    ::epoll_ctl(epoll, EPOLL_CTL_MOD, c.fd, &e);
}

// Closes a parked connection and drops it.
void HttpServer::Intake::forget(Connection& c) {
    {
        std::lock_guard<std::mutex> lock(mutex);
        budget_left += c.reserved;
    }
    const int fd = c.fd;
    close_connection(c);  // also leaves the epoll set
    parked.erase(fd);
}

// Refuses (408) the requests past their deadline, closes the silent connections past theirs;
// returns how long the poller may sleep before the next deadline.
int HttpServer::Intake::cut_expired() {
    const auto now = Clock::now();
    auto next = now + std::chrono::seconds(1);
    std::vector<Connection*> expired;
    for (auto& [fd, c] : parked) {
        if (c->deadline <= now)
            expired.push_back(c.get());
        else
            next = std::min(next, c->deadline);
    }
    for (Connection* c : expired) {
        if (c->refused || c->bytes.empty()) {
            forget(*c);
        } else {
            refuse(*c, 408,
                   fmt::format("the request did not arrive whole within {} s; the connection "
                               "is closed",
                               std::chrono::duration<double>(options.request_timeout).count()));
            next = std::min(next, c->deadline);
        }
    }
    return static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1);
}

// ---- the pool ----

void HttpServer::Intake::pool_loop() {
    for (;;) {
        std::unique_ptr<Connection> c;
        {
            std::unique_lock<std::mutex> lock(mutex);
            ready_cv.wait(lock, [&] { return !ready.empty() || pool_done; });
            if (ready.empty()) return;
            c = std::move(ready.front());
            ready.pop_front();
        }
        answer(std::move(c));
    }
}

void HttpServer::Intake::answer(std::unique_ptr<Connection> c) {
    bool last;
    {
        std::lock_guard<std::mutex> lock(mutex);
        last = stopping || c->answered + 1 >= kMaxRequestsPerConnection;
    }
    bool ok = false, closed = false;
    {
        ConnectionStream stream(*c, options);
        try {
            ok = server.process_request(stream, last, closed, nullptr);
        } catch (...) {
            ok = false;  // httplib answers handlers' exceptions itself; anything else ends it
        }
    }
    c->bytes.erase(0, c->consumed);  // what is left is the next request, sent early
    c->consumed = 0;
    c->head_end = c->body = c->searched = 0;
    c->chunked = false;
    ++c->answered;
    {
        std::lock_guard<std::mutex> lock(mutex);
        budget_left += c->reserved;
        c->reserved = 0;
        if (ok && !closed && !last && !stopping) {
            inbox.push_back(std::move(c));
        }
    }
    if (c) close_connection(*c);
    wake();  // the budget has room again, or the connection waits for its next request
}

// ---- HttpServer ----

HttpServer::HttpServer() : intake_(std::make_unique<Intake>(*this)) {
    new_task_queue = [] { return new HandOver(); };
}

HttpServer::~HttpServer() = default;

void HttpServer::configure(const HttpServerOptions& options) {
    intake_->options = options;
    set_keep_alive_max_count(kMaxRequestsPerConnection);
    // httplib tells clients this in its Keep-Alive header; the intake applies it.
    set_keep_alive_timeout(std::max<time_t>(
        1, std::chrono::duration_cast<std::chrono::seconds>(options.request_timeout).count()));
}

void HttpServer::widen_backlog() {
    if (svr_sock_ != INVALID_SOCKET) ::listen(svr_sock_, SOMAXCONN);
}

bool HttpServer::serve() {
    intake_->start();
    const bool ok = listen_after_bind();  // returns after stop()
    intake_->stop();
    return ok;
}

std::size_t HttpServer::open_connections() const { return intake_->open; }

bool HttpServer::process_and_close_socket(socket_t sock) {
    intake_->admit(sock);
    return true;
}

}  // namespace boneage::serve
