// Nothing lost: training killed with SIGKILL at random moments resumes with at most the epoch
// in progress lost and ends with the weights of an uninterrupted run; a full disk and a
// read-only folder stop every writer with an error naming the path, a non-zero exit and no
// partial output under a final name.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/inotify.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boneage/dataset.hpp>
#include <boneage/durable_file.hpp>
#include <boneage/error.hpp>
#include <boneage/image.hpp>
#include <boneage/model.hpp>
#include <boneage/train.hpp>
#include <chrono>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "support.hpp"
#include "train/checkpoint.hpp"

namespace boneage {
namespace {

namespace fs = std::filesystem;
using test::run_command;
using test::ScratchDir;

const std::string kCli = BONEAGE_CLI;

std::string read_text(const fs::path& file) {
    std::ifstream in(file, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// Files left under a temporary name (durable_file.hpp) anywhere below `dir`.
std::vector<fs::path> temp_files_below(const fs::path& dir) {
    std::vector<fs::path> out;
    if (!fs::exists(dir)) return out;
    for (const auto& e : fs::recursive_directory_iterator(dir))
        if (e.path().filename().string().find(".tmp-") != std::string::npos)
            out.push_back(e.path());
    return out;
}

// A tmpfs of `bytes` mounted on a fresh folder for one test, unmounted at the end. Mounting
// needs root (CAP_SYS_ADMIN); without it the tests that need a disk of their own skip.
class SmallDisk {
public:
    static std::optional<SmallDisk> mount(const fs::path& dir, std::size_t bytes,
                                          bool read_only = false) {
        fs::create_directories(dir);
        std::string out;
        const std::string options =
            "size=" + std::to_string(bytes) + ",mode=0755" + (read_only ? ",ro" : "");
        if (run_command("mount -t tmpfs -o " + options + " tmpfs '" + dir.string() + "'", &out) !=
            0)
            return std::nullopt;
        return SmallDisk(dir);
    }
    SmallDisk(SmallDisk&& other) noexcept : dir_(std::move(other.dir_)) { other.dir_.clear(); }
    SmallDisk(const SmallDisk&) = delete;
    ~SmallDisk() {
        if (!dir_.empty()) run_command("umount -l '" + dir_.string() + "'");
    }
    const fs::path& path() const { return dir_; }
    fs::path operator/(const std::string& leaf) const { return dir_ / leaf; }

private:
    explicit SmallDisk(fs::path dir) : dir_(std::move(dir)) {}
    fs::path dir_;
};

#define MOUNT_OR_SKIP(var, ...)                                                                \
    auto var##_mounted = SmallDisk::mount(__VA_ARGS__);                                        \
    if (!var##_mounted)                                                                        \
        GTEST_SKIP() << "cannot mount a tmpfs here (needs root): the full-disk and read-only " \
                        "cases are not run";                                                   \
    SmallDisk& var = *var##_mounted

// Phantoms, their cache and a tiny trained model, made once for the suite with the CLI.
class Reliability : public ::testing::Test {
protected:
    static void SetUpTestSuite() {
        scratch_ = std::make_unique<ScratchDir>("reliability");
        std::string out;
        const fs::path& dir = scratch_->path();
        ASSERT_EQ(run_command(kCli + " synth --out '" + (dir / "phantoms").string() +
                                  "' --count 16 --size 256x320 --seed 5",
                              &out),
                  0)
            << out;
        ASSERT_EQ(run_command(kCli + " prepare --images '" + (dir / "phantoms").string() +
                                  "' --labels '" + (dir / "phantoms/labels.csv").string() +
                                  "' --size 64 --out '" + (dir / "phantoms.cache").string() + "'",
                              &out),
                  0)
            << out;
        ASSERT_EQ(run_command(train_command(dir / "tiny.bin", dir / "tiny.run", 2), &out), 0)
            << out;
    }
    static void TearDownTestSuite() { scratch_.reset(); }

    static fs::path dir() { return scratch_->path(); }

    static std::string train_command(const fs::path& out, const fs::path& run_dir, int epochs,
                                     int steps = 4) {
        return kCli + " train --train '" + (dir() / "phantoms.cache").string() +
               "' --val-split 0.25 --arch shallow --input-size 64 --batch 4 --threads 1" +
               " --steps-per-epoch " + std::to_string(steps) + " --epochs " +
               std::to_string(epochs) + " --patience 1000 --seed 3 --out '" + out.string() +
               "' --run-dir '" + run_dir.string() + "'";
    }

    static std::unique_ptr<ScratchDir> scratch_;
};
std::unique_ptr<ScratchDir> Reliability::scratch_;

TEST(DurableFile, ACommitIntoAMissingFolderFailsNamingItAndRemovesTheTemporaryFile) {
    ScratchDir scratch("durable");
    const fs::path tmp = temp_beside(scratch / "a.txt");
    EXPECT_EQ(tmp.parent_path(), scratch.path());
    EXPECT_NE(tmp.filename().string().find(".a.txt.tmp-"), std::string::npos) << tmp;
    EXPECT_NE(temp_beside(scratch / "a.txt"), tmp) << "two writers would share a temporary file";
    std::ofstream(tmp) << "hello";
    try {
        commit_file(tmp, scratch / "no-such-folder" / "a.txt");
        FAIL() << "a commit into a missing folder succeeded";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::CannotWrite);
        EXPECT_NE(std::string(e.what()).find("no-such-folder/a.txt"), std::string::npos)
            << e.what();
    }
    EXPECT_FALSE(fs::exists(tmp));

    write_file_atomically(scratch / "a.txt", "whole");
    EXPECT_EQ(read_text(scratch / "a.txt"), "whole");
    EXPECT_TRUE(temp_files_below(scratch.path()).empty());
}

TEST(DurableFile, OnAFullDiskTheOldFileStaysWholeAndNoTemporaryFileRemains) {
    ScratchDir scratch("durable-full");
    MOUNT_OR_SKIP(disk, scratch / "disk", 64 * 1024);
    write_file_atomically(disk / "report.md", "the old report\n");
    const std::string big(200 * 1024, 'x');
    try {
        write_file_atomically(disk / "report.md", big);
        FAIL() << "200 KiB fitted on a 64 KiB disk";
    } catch (const Error& e) {
        EXPECT_EQ(e.kind(), ErrorKind::CannotWrite);
        EXPECT_NE(std::string(e.what()).find((disk / "report.md").string()), std::string::npos)
            << e.what();
        EXPECT_NE(std::string(e.what()).find("No space left on device"), std::string::npos)
            << e.what();
    }
    EXPECT_EQ(read_text(disk / "report.md"), "the old report\n");
    EXPECT_TRUE(temp_files_below(disk.path()).empty());
}

TEST_F(Reliability, PrepareOnAFullDiskStopsNamingTheCacheAndLeavesNothing) {
    MOUNT_OR_SKIP(disk, dir() / "prepare-full", 32 * 1024);
    std::string out;
    const int status = run_command(kCli + " prepare --images '" + (dir() / "phantoms").string() +
                                       "' --labels '" + (dir() / "phantoms/labels.csv").string() +
                                       "' --size 128 --out '" + (disk / "big.cache").string() + "'",
                                   &out);
    EXPECT_EQ(status, 3) << out;
    EXPECT_NE(out.find((disk / "big.cache").string()), std::string::npos) << out;
    EXPECT_NE(out.find("No space left on device"), std::string::npos) << out;
    EXPECT_TRUE(fs::is_empty(disk.path())) << "prepare left files on the full disk";
}

TEST_F(Reliability, TrainOnAFullDiskStopsNamingTheFileAndNeverLeavesAHalfWrittenOne) {
    MOUNT_OR_SKIP(disk, dir() / "train-full", 64 * 1024);
    // The run folder on the full disk: the first checkpoint (about 1.5 MB) cannot be written.
    std::string out;
    EXPECT_EQ(run_command(train_command(dir() / "unused.bin", disk / "run", 2), &out), 3) << out;
    EXPECT_NE(out.find((disk / "run" / kCheckpointFile).string()), std::string::npos) << out;
    EXPECT_NE(out.find("No space left on device"), std::string::npos) << out;
    EXPECT_EQ(out.find("terminate called"), std::string::npos) << out;
    EXPECT_FALSE(fs::exists(disk / "run" / kCheckpointFile));
    EXPECT_TRUE(temp_files_below(disk.path()).empty());

    // The run elsewhere, the model file on the full disk: the run stays resumable.
    const fs::path run = dir() / "full-out.run";
    EXPECT_EQ(run_command(train_command(disk / "model.bin", run, 2), &out), 3) << out;
    EXPECT_NE(out.find((disk / "model.bin").string()), std::string::npos) << out;
    EXPECT_NE(out.find("No space left on device"), std::string::npos) << out;
    EXPECT_FALSE(fs::exists(disk / "model.bin"));
    EXPECT_TRUE(temp_files_below(disk.path()).empty());
    EXPECT_EQ(detail::read_checkpoint_state(run / kCheckpointFile).epoch, 2);
}

TEST_F(Reliability, PreprocessOnAFullDiskReportsEveryImageItCouldNotWriteAndLeavesOnlyWholeFiles) {
    MOUNT_OR_SKIP(disk, dir() / "preprocess-full", 96 * 1024);
    std::string inputs;
    for (int i = 0; i < 16; ++i)
        inputs += " '" + (dir() / "phantoms" / (std::to_string(1000 + i) + ".png")).string() + "'";
    std::string out;
    EXPECT_EQ(
        run_command(kCli + " preprocess --out '" + (disk / "pre").string() + "'" + inputs, &out), 1)
        << out;
    EXPECT_NE(out.find("No space left on device"), std::string::npos) << out;
    std::size_t whole = 0;
    for (const auto& e : fs::directory_iterator(disk / "pre")) {
        const fs::path f = e.path();
        if (f.extension() == ".png") {
            const cv::Mat image = read_radiograph(f).pixels;
            EXPECT_EQ(image.rows, 320) << f;  // decodes whole, at the letterbox size
            ++whole;
        } else {
            EXPECT_NO_THROW((void)nlohmann::json::parse(read_text(f))) << f;
        }
    }
    const std::regex failed_line(R"(pre/\d+\.(png|json): cannot write: No space left on device)");
    const std::ptrdiff_t failures = std::distance(
        std::sregex_iterator(out.begin(), out.end(), failed_line), std::sregex_iterator());
    EXPECT_EQ(failures + static_cast<std::ptrdiff_t>(whole), 16) << out;
    EXPECT_GT(failures, 0);
    EXPECT_TRUE(temp_files_below(disk.path()).empty());
}

TEST_F(Reliability, EvaluateReportOnAFullDiskStopsNamingTheFileAndLeavesOnlyWholeFiles) {
    MOUNT_OR_SKIP(disk, dir() / "report-full", 24 * 1024);
    std::string out;
    EXPECT_EQ(run_command(kCli + " evaluate --model '" + (dir() / "tiny.bin").string() +
                              "' --cache '" + (dir() / "phantoms.cache").string() + "' --report '" +
                              (disk / "report").string() + "'",
                          &out),
              3)
        << out;
    EXPECT_NE(out.find((disk / "report").string()), std::string::npos) << out;
    for (const auto& e : fs::recursive_directory_iterator(disk / "report")) {
        if (!e.is_regular_file() || e.path().extension() != ".png") continue;
        const std::string bytes = read_text(e.path());
        ASSERT_GE(bytes.size(), 12u) << e.path();
        EXPECT_EQ(bytes.substr(bytes.size() - 8, 4), "IEND") << e.path() << " is cut short";
    }
    EXPECT_FALSE(fs::exists(disk / "report" / "report.md"));
    EXPECT_TRUE(temp_files_below(disk.path()).empty());
}

TEST_F(Reliability, EveryWriterRefusesAReadOnlyFolderNamingThePath) {
    MOUNT_OR_SKIP(ro, dir() / "read-only", 1024 * 1024, /*read_only=*/true);
    const std::string cache = (dir() / "phantoms.cache").string();
    struct Case {
        std::string name, command;
        int status;
        fs::path named;
    };
    const std::vector<Case> cases = {
        {"prepare",
         kCli + " prepare --images '" + (dir() / "phantoms").string() + "' --labels '" +
             (dir() / "phantoms/labels.csv").string() + "' --size 64 --out '" +
             (ro / "x.cache").string() + "'",
         3, ro / "x.cache"},
        {"train --run-dir", train_command(dir() / "ro-unused.bin", ro / "run", 1), 3, ro / "run"},
        {"train --out", train_command(ro / "model.bin", dir() / "ro-out.run", 1), 3,
         ro / "model.bin"},
        {"preprocess",
         kCli + " preprocess --out '" + (ro / "pre").string() + "' '" +
             (dir() / "phantoms/1000.png").string() + "'",
         3, ro / "pre"},
        {"evaluate --report",
         kCli + " evaluate --model '" + (dir() / "tiny.bin").string() + "' --cache '" + cache +
             "' --report '" + (ro / "report").string() + "'",
         3, ro / "report"},
    };
    for (const Case& c : cases) {
        std::string out;
        const int status = run_command(c.command, &out);
        EXPECT_EQ(status, c.status) << c.name << ": " << out;
        EXPECT_NE(out.find(c.named.string()), std::string::npos) << c.name << ": " << out;
        EXPECT_NE(out.find("Read-only file system"), std::string::npos) << c.name << ": " << out;
    }
    EXPECT_TRUE(fs::is_empty(ro.path()));
}

// --- Killed training --------------------------------------------------------------------------

// A child process running `command` under /bin/sh, its output to `log`.
pid_t spawn(const std::string& command, const fs::path& log) {
    const pid_t pid = ::fork();
    if (pid == 0) {
        const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(fd, 1);
        ::dup2(fd, 2);
        ::execl("/bin/sh", "sh", "-c", ("exec " + command).c_str(), static_cast<char*>(nullptr));
        ::_exit(127);
    }
    return pid;
}

// Waits until a file whose name starts with `prefix` is created in `dir` for the `nth` time
// (1 = the first), or until `timeout`; true when it was. inotify wakes this thread as the file
// appears, so a kill sent right after lands while it is being written.
bool wait_for_creation(int inotify_fd, const std::string& prefix, int nth,
                       std::chrono::milliseconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    int seen = 0;
    alignas(inotify_event) char buffer[8192];
    while (std::chrono::steady_clock::now() < end) {
        pollfd p{inotify_fd, POLLIN, 0};
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
            end - std::chrono::steady_clock::now());
        if (::poll(&p, 1, static_cast<int>(std::max<long>(1, left.count()))) <= 0) continue;
        const ssize_t n = ::read(inotify_fd, buffer, sizeof buffer);
        for (ssize_t at = 0; at < n;) {
            const auto* event = reinterpret_cast<const inotify_event*>(buffer + at);
            if (event->len > 0 && std::string(event->name).rfind(prefix, 0) == 0 && ++seen >= nth)
                return true;
            at += static_cast<ssize_t>(sizeof(inotify_event) + event->len);
        }
    }
    return false;
}

// The last epoch whose summary line ("epoch N/E  loss ...") the run printed: the trainer
// prints it after that epoch's checkpoint is in place.
int last_reported_epoch(const fs::path& log) {
    const std::string text = read_text(log);
    const std::regex summary(R"(epoch (\d+)/\d+  loss )");
    int last = 0;
    for (auto it = std::sregex_iterator(text.begin(), text.end(), summary);
         it != std::sregex_iterator(); ++it)
        last = std::max(last, std::stoi((*it)[1]));
    return last;
}

std::vector<torch::Tensor> weights_of(const fs::path& model_file) {
    const LoadedModel m = load_model(model_file);
    std::vector<torch::Tensor> out;
    for (const auto& p : m.net->named_parameters()) out.push_back(p.value().detach().clone());
    return out;
}

TEST_F(Reliability,
       TrainingKilledTwentyFourTimesLosesAtMostTheEpochInProgressAndEndsAsIfNeverKilled) {
    constexpr int kEpochs = 150, kKills = 24;
    const fs::path base = dir() / "kill";
    fs::create_directories(base / "out");
    const fs::path run = base / "run", model = base / "out" / "model.bin";
    fs::create_directories(run);
    const std::string fresh = train_command(model, run, kEpochs, 10);
    const std::string resume = kCli + " train --resume --run-dir '" + run.string() + "'";

    const int inotify_fd = ::inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
    ASSERT_GE(inotify_fd, 0);
    ASSERT_GE(::inotify_add_watch(inotify_fd, run.c_str(), IN_CREATE), 0);
    ASSERT_GE(::inotify_add_watch(inotify_fd, model.parent_path().c_str(), IN_CREATE), 0);

    std::mt19937 rng(2026);
    std::set<fs::path> temps_seen;  // left by earlier kills, removed by a later checkpoint
    int kills = 0, mid_write = 0, reported = 0, worst_loss = 0, resumes = 0;
    for (int k = 0; kills < kKills; ++k) {
        ASSERT_LT(k, 4 * kKills) << "the run keeps finishing before it can be killed";
        const bool started = fs::exists(run / kCheckpointFile);
        const fs::path log = base / ("attempt-" + std::to_string(k) + ".log");
        char drain[4096];
        while (::read(inotify_fd, drain, sizeof drain) > 0) {
        }
        const pid_t pid = spawn(started ? resume : fresh, log);
        resumes += started;
        if (k % 2 == 1) {
            // Into a checkpoint write: the 1st to 3rd checkpoint this process starts.
            const int nth = std::uniform_int_distribution<int>(1, 3)(rng);
            wait_for_creation(inotify_fd, "." + std::string(kCheckpointFile) + ".tmp-", nth,
                              std::chrono::seconds(20));
        } else {
            std::this_thread::sleep_for(
                std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 900)(rng)));
        }
        ::kill(pid, SIGKILL);
        int status = 0;
        ::waitpid(pid, &status, 0);
        ASSERT_FALSE(WIFEXITED(status) && WEXITSTATUS(status) != 0) << "the run failed by itself:\n"
                                                                    << read_text(log);
        ASSERT_FALSE(WIFEXITED(status)) << "the run finished before " << kKills << " kills";
        ++kills;

        // What is under the final names is whole; the checkpoint holds every reported epoch.
        bool new_temp = false;
        for (const fs::path& t : temp_files_below(run)) new_temp |= temps_seen.insert(t).second;
        mid_write += new_temp;
        reported = std::max(reported, last_reported_epoch(log));
        if (!fs::exists(run / kCheckpointFile)) {
            EXPECT_EQ(reported, 0) << "an epoch was reported but has no checkpoint";
            continue;
        }
        const detail::CheckpointState state = detail::read_checkpoint_state(run / kCheckpointFile);
        EXPECT_GE(state.epoch, reported) << "kill " << kills << " lost a finished epoch";
        worst_loss = std::max(worst_loss, reported - state.epoch);
        std::istringstream history(read_text(run / kHistoryFile));
        std::string line;
        int rows = -1;  // the header
        while (std::getline(history, line)) ++rows;
        EXPECT_GE(rows, state.epoch - 1) << "history.csv is behind its checkpoint";
        EXPECT_FALSE(fs::exists(model));
    }
    ::close(inotify_fd);
    EXPECT_GE(mid_write, 1) << "no kill landed during a checkpoint write";
    EXPECT_GE(resumes, kKills / 2);

    std::string out;
    ASSERT_EQ(run_command(resume, &out), 0) << out;
    EXPECT_TRUE(temp_files_below(run).empty()) << "a resumed run leaves stale temporary files";
    const detail::CheckpointState done = detail::read_checkpoint_state(run / kCheckpointFile);
    EXPECT_EQ(done.epoch, kEpochs);
    ASSERT_EQ(done.history.size(), static_cast<std::size_t>(kEpochs));
    for (int e = 0; e < kEpochs; ++e) EXPECT_EQ(done.history[e].epoch, e + 1);

    // Resuming is exact, so the killed run ends with the weights of one never killed.
    const fs::path straight = base / "straight.bin";
    ASSERT_EQ(run_command(train_command(straight, base / "straight.run", kEpochs, 10), &out), 0)
        << out;
    const std::vector<torch::Tensor> a = weights_of(model), b = weights_of(straight);
    ASSERT_EQ(a.size(), b.size());
    for (std::size_t i = 0; i < a.size(); ++i)
        EXPECT_TRUE(torch::equal(a[i], b[i])) << "tensor " << i;

    std::cout << "[ killed ] " << kills << " SIGKILLs, " << mid_write
              << " during a checkpoint write, " << resumes << " resumes; worst loss " << worst_loss
              << " finished epochs (the epoch in progress is always lost)\n";
}

}  // namespace
}  // namespace boneage
