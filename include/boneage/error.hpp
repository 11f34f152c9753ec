// Typed errors of the boneage library. The library never exits or prints; it throws one of
// these, naming the file (when there is one) and the reason, and the CLI maps it to a message
// and an exit code.
//
//   try { auto r = boneage::read_radiograph("hand.png"); }
//   catch (const boneage::Error& e) { std::cerr << e.what(); }  // "hand.png: truncated ..."
#pragma once

#include <filesystem>
#include <stdexcept>
#include <string>

namespace boneage {

// What went wrong, so callers (predict's per-input status, tests) can tell cases apart
// without parsing messages.
enum class ErrorKind {
    NotFound,       // the file does not exist or cannot be opened
    Empty,          // the file has zero bytes
    NotAnImage,     // the content is not a format we decode
    Truncated,      // the header is valid but the data ends early or is corrupt
    TooLarge,       // the header claims more pixels than ReadLimits allows
    Unsupported,    // a valid file we cannot decode (compressed DICOM syntax, odd layout)
    NoPixelData,    // DICOM without a pixel data element
    BadData,        // a dataset, labels file or cache with invalid content
    BadModel,       // not a boneage model file, or of another version
    Usage,          // invalid arguments or settings
    CannotWrite,    // an output cannot be written (no space left, read-only folder, no permission)
    Internal,       // a bug: an invariant did not hold
};

const char* to_string(ErrorKind kind);

// The first line of an exception's message: LibTorch appends a C++ backtrace on the lines
// after it, which no answer should carry.
std::string first_line(const std::string& message);

class Error : public std::runtime_error {
public:
    Error(ErrorKind kind, const std::filesystem::path& file, const std::string& reason);
    Error(ErrorKind kind, const std::string& reason);

    ErrorKind kind() const noexcept { return kind_; }
    const std::filesystem::path& file() const noexcept { return file_; }
    const std::string& reason() const noexcept { return reason_; }

private:
    ErrorKind kind_;
    std::filesystem::path file_;
    std::string reason_;
};

// Invalid arguments or settings; the CLI exits with status 2 on these.
class UsageError : public Error {
public:
    explicit UsageError(const std::string& reason) : Error(ErrorKind::Usage, reason) {}
};

}  // namespace boneage
