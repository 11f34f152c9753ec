// httplib's server with an intake of its own, so that a request has a deadline as a whole.
//
// httplib 0.11 serves a connection on one pool thread from accept to close, and its read
// timeout restarts at every read: a client sending a byte a second holds a thread for as long
// as it likes, and a few such clients stop the service. Here one thread polls every connection
// (epoll) and reads what arrives without blocking; a request goes to a pool thread, and to
// httplib's parser and routes, only once it has arrived whole (head and Content-Length body).
// A request that is not whole within `request_timeout` of its connection being accepted (or of
// the previous answer on it) is answered 408 and closed; a silent connection is closed. Slow
// clients then cost a file descriptor and a few bytes each, never a thread.
//
//   serve::HttpServer server;
//   serve::HttpServerOptions options;
//   options.request_timeout = std::chrono::seconds(30);
//   server.configure(options);
//   server.Get("/healthz", handler);
//   server.bind_to_port("127.0.0.1", 8080);
//   server.widen_backlog();
//   server.serve();   // until stop()
#pragma once

#include <httplib.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>

namespace boneage::serve {

struct HttpServerOptions {
    // A request must arrive whole within this of its connection being accepted or its previous
    // answer being sent; its answer must then be written within the same time.
    std::chrono::milliseconds request_timeout{60000};
    // The longest gap between two reads or writes once a pool thread has the connection (a
    // chunked body, which the intake does not buffer, or an answer being written).
    std::chrono::milliseconds io_timeout{30000};
    int threads = 8;  // requests handled at once (pool threads)
    // Bytes of request bodies buffered at once, across connections; a body that does not fit
    // waits, unread, until others are answered. 0: threads x the payload limit.
    std::size_t body_budget = 0;
    // Called (from the intake's thread) for each request the intake answers itself, before
    // httplib sees it: 408 past the deadline, 413 over the payload limit, 431 a head too long,
    // 503 stopping. `method` is the request line's first word, empty when none arrived.
    std::function<void(const std::string& method, int status)> on_refused;
};

class HttpServer : public httplib::Server {
public:
    HttpServer();
    ~HttpServer() override;

    // Sets the options; call before serve().
    void configure(const HttpServerOptions& options);
    // Widens the listening socket's backlog from httplib's 5 to the system's maximum, so that
    // a burst of connections waits in the kernel rather than being refused. Call after binding.
    void widen_backlog();
    // Serves until stop(): returns once the requests that arrived whole are answered;
    // connections still sending a request are answered 503 and closed. Call after binding.
    bool serve();

    // Client connections open now: arriving, being answered, or waiting for the next request.
    std::size_t open_connections() const;

private:
    // Called by httplib's accept loop for each accepted socket: hands it to the intake.
    bool process_and_close_socket(socket_t sock) override;

    struct Intake;
    std::unique_ptr<Intake> intake_;
};

}  // namespace boneage::serve
