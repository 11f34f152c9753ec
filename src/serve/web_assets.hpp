// The page's files (web/ in the source tree), compiled into the binary by
// cmake/web_assets.cmake: the page always matches the API of the binary that serves it, and the
// service needs no folder beside it.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace boneage::serve {

struct WebAsset {
    std::string name;           // file name under web/, e.g. "app.js"
    const unsigned char* data;  // its bytes
    std::size_t size;
};

const std::vector<WebAsset>& web_assets();

}  // namespace boneage::serve
