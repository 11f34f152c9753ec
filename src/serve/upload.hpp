// What arrives over the wire, before the library reads it: the kind of file by its first bytes,
// and the bytes written under a name the service makes up (never one the client sent).
#pragma once

#include <filesystem>
#include <string>

namespace boneage::serve {

// "png", "jpg", "tif", "bmp" or "dcm" by the file's signature (DICOM: "DICM" after the
// 128-byte preamble); empty when it is none of them.
std::string image_extension(const std::string& bytes);

// Writes `bytes` to a fresh file DIR/.upload-<unique>.<ext> and returns its path. Throws
// boneage::Error naming the file when it cannot be written.
std::filesystem::path write_upload(const std::filesystem::path& dir, const std::string& bytes,
                                   const std::string& ext);

// The file's SHA-256, 64 lowercase hex digits. Throws boneage::Error when it cannot be read.
std::string file_sha256(const std::filesystem::path& file);

// `name` cut to its last path component and to printable ASCII, at most 120 characters: a
// client's file name kept for display, never used as a path.
std::string display_name(const std::string& name);

}  // namespace boneage::serve
