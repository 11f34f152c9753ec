#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <boneage/durable_file.hpp>
#include <boneage/error.hpp>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <system_error>

namespace boneage {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void fail(const fs::path& file, const std::string& what, int err) {
    throw Error(ErrorKind::CannotWrite, file, what + ": " + std::strerror(err));
}

// fsync on a descriptor opened for `path`: 0, or the errno of the step that failed.
int sync_path(const fs::path& path, int flags) {
    const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
    if (fd < 0) return errno;
    int err = 0;
    if (::fsync(fd) != 0) err = errno;
    ::close(fd);
    return err;
}

std::string host_name() {
    char name[256] = {};
    if (::gethostname(name, sizeof name - 1) != 0 || name[0] == '\0') return "host";
    std::string host(name);
    for (char& c : host)
        if (c == '-' || c == '/') c = '_';  // '-' separates the fields of the name
    return host;
}

// ".<name>.tmp-<host>-" : what every temporary file of `target` written on this host starts with.
std::string temp_prefix(const fs::path& target) {
    return "." + target.filename().string() + ".tmp-" + host_name() + "-";
}

fs::path folder_of(const fs::path& file) {
    return file.has_parent_path() ? file.parent_path() : fs::path(".");
}

}  // namespace

fs::path temp_beside(const fs::path& target) {
    // Hidden, and unique per process and call, so two writers of one target never share it.
    static std::atomic<unsigned> counter{0};
    std::random_device rd;
    char suffix[48];
    std::snprintf(suffix, sizeof suffix, "%d-%08x", static_cast<int>(::getpid()),
                  rd() ^ counter.fetch_add(1));
    return target.parent_path() / (temp_prefix(target) + suffix);
}

int remove_stale_temps(const fs::path& target) {
    const fs::path folder = folder_of(target);
    const std::string prefix = temp_prefix(target);
    int removed = 0;
    std::error_code ec;
    for (fs::directory_iterator it(folder, ec), end; !ec && it != end; it.increment(ec)) {
        const std::string name = it->path().filename().string();
        if (name.rfind(prefix, 0) != 0) continue;
        const long pid = std::strtol(name.c_str() + prefix.size(), nullptr, 10);
        if (pid <= 0 || (::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)) {
            std::error_code ignored;
            removed += fs::remove(it->path(), ignored) ? 1 : 0;
        }
    }
    return removed;
}

void commit_file(const fs::path& tmp, const fs::path& target) {
    auto drop_tmp = [&] {
        std::error_code ignored;
        fs::remove(tmp, ignored);
    };
    // A write that ran out of space can still "succeed" into the page cache; fsync is where
    // the disk says no, so its error must stop the rename.
    if (int err = sync_path(tmp, O_RDONLY); err != 0) {
        drop_tmp();
        fail(target, "cannot flush to disk", err);
    }
    if (::rename(tmp.c_str(), target.c_str()) != 0) {
        const int err = errno;
        drop_tmp();
        fail(target, "cannot move into place", err);
    }
    // The rename itself lives in the folder; without this a power cut may forget it.
    const fs::path folder = folder_of(target);
    if (int err = sync_path(folder, O_RDONLY | O_DIRECTORY); err != 0 && err != EINVAL)
        fail(folder, "cannot flush the folder", err);
}

void write_file_atomically(const fs::path& target, std::string_view bytes) {
    TempFileGuard tmp(temp_beside(target));
    std::FILE* out = std::fopen(tmp.path().c_str(), "wb");
    if (!out) fail(target, "cannot create", errno);
    const bool written = std::fwrite(bytes.data(), 1, bytes.size(), out) == bytes.size();
    const int write_errno = errno;
    if (std::fclose(out) != 0 || !written)
        fail(target, "cannot write", written ? errno : write_errno);
    tmp.commit(target);
}

TempFileGuard::~TempFileGuard() {
    if (committed_) return;
    std::error_code ignored;
    fs::remove(tmp_, ignored);
}

void TempFileGuard::commit(const fs::path& target) {
    committed_ = true;  // commit_file removes the temporary file itself when it fails
    commit_file(tmp_, target);
}

}  // namespace boneage
