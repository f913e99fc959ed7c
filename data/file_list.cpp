#include "data/file_list.h"

#include <algorithm>
#include <cctype>
#include <filesystem>

#include "engine/error.h"

namespace data {

namespace fs = std::filesystem;

namespace {

void add_folder_images(const fs::path& folder, std::vector<std::string>& out) {
  const size_t before = out.size();
  try {
    for (auto it = fs::recursive_directory_iterator(folder); it != fs::recursive_directory_iterator(); ++it) {
      if (it->is_directory()) {
        if (is_hidden(it->path())) it.disable_recursion_pending();
        continue;
      }
      if (has_image_extension(it->path()) && !is_hidden(it->path())) out.push_back(it->path().string());
    }
  } catch (const fs::filesystem_error& e) {
    engine::detail::fail("folder '", folder.string(), "': ", e.what());
  }
  ENGINE_CHECK(out.size() > before, "folder '", folder.string(), "' has no images (.jpg .jpeg .png .bmp)");
}

}  // namespace

std::vector<std::string> find_image_files(const std::vector<std::string>& inputs) {
  ENGINE_CHECK(!inputs.empty(), "no images given: name image files or folders");
  std::vector<std::string> files;
  for (const std::string& input : inputs) {
    std::error_code ec;
    if (fs::is_directory(input, ec)) {
      add_folder_images(input, files);
    } else {
      files.push_back(input);
    }
  }
  std::sort(files.begin(), files.end());
  files.erase(std::unique(files.begin(), files.end()), files.end());
  return files;
}

FileListDataset::FileListDataset(const std::vector<std::string>& paths, DecodeLimits limits) : limits_(limits) {
  samples_.reserve(paths.size());
  for (const std::string& path : paths) samples_.push_back({path, kLabelUnknown, ""});
}

}  // namespace data
