// Outputs that are either whole or absent. Every file boneage writes (models, checkpoints,
// caches, histories, reports) is written under a temporary name beside its final one, then
// committed: flushed to the disk, renamed into place and the folder's entry flushed too, so a
// crash, a kill or a power cut leaves the old file or the new one, never a half-written file
// under the final name.
//
//   std::filesystem::path tmp = boneage::temp_beside(out);
//   write_everything_to(tmp);
//   boneage::commit_file(tmp, out);   // throws Error(CannotWrite) naming the path on failure
#pragma once

#include <filesystem>
#include <string_view>

namespace boneage {

// A temporary name beside `target` (".<name>.tmp-<host>-<pid>-<random>"), in the same folder
// so the final rename stays on one file system and is atomic.
std::filesystem::path temp_beside(const std::filesystem::path& target);

// Removes the temporary files of `target` that a writer on this host left when it was killed
// (its process is gone); a live writer's are kept. Returns how many were removed. Never throws.
int remove_stale_temps(const std::filesystem::path& target);

// fsync(tmp), rename(tmp, target), fsync(target's folder). On failure removes `tmp` and throws
// Error(ErrorKind::CannotWrite) naming the path and the system's reason ("No space left on
// device", "Read-only file system").
void commit_file(const std::filesystem::path& tmp, const std::filesystem::path& target);

// Writes `bytes` to `target` through a temporary file and commit_file: the whole text or
// nothing. Throws Error(ErrorKind::CannotWrite) naming the path.
void write_file_atomically(const std::filesystem::path& target, std::string_view bytes);

// Removes `tmp` unless the scope ended with commit(): the guard for writers that may throw
// between creating the temporary file and committing it.
class TempFileGuard {
public:
    explicit TempFileGuard(std::filesystem::path tmp) : tmp_(std::move(tmp)) {}
    ~TempFileGuard();
    TempFileGuard(const TempFileGuard&) = delete;
    TempFileGuard& operator=(const TempFileGuard&) = delete;

    const std::filesystem::path& path() const noexcept { return tmp_; }
    void commit(const std::filesystem::path& target);

private:
    std::filesystem::path tmp_;
    bool committed_ = false;
};

}  // namespace boneage
