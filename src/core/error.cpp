#include <boneage/error.hpp>

namespace boneage {

const char* to_string(ErrorKind kind) {
    switch (kind) {
        case ErrorKind::NotFound: return "not found";
        case ErrorKind::Empty: return "empty";
        case ErrorKind::NotAnImage: return "not an image";
        case ErrorKind::Truncated: return "truncated";
        case ErrorKind::TooLarge: return "too large";
        case ErrorKind::Unsupported: return "unsupported";
        case ErrorKind::NoPixelData: return "no pixel data";
        case ErrorKind::BadData: return "bad data";
        case ErrorKind::BadModel: return "bad model";
        case ErrorKind::Usage: return "usage";
        case ErrorKind::CannotWrite: return "cannot write";
        case ErrorKind::Internal: return "internal";
    }
    return "unknown";
}

Error::Error(ErrorKind kind, const std::filesystem::path& file, const std::string& reason)
    : std::runtime_error(file.string() + ": " + reason), kind_(kind), file_(file),
      reason_(reason) {}

Error::Error(ErrorKind kind, const std::string& reason)
    : std::runtime_error(reason), kind_(kind), reason_(reason) {}

std::string first_line(const std::string& message) {
    return message.substr(0, message.find('\n'));
}

}  // namespace boneage
