// Image-folder datasets: layout detection, class mapping, and the folder errors reported
// before training starts.
#include "data/dataset.h"

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

namespace data {

namespace fs = std::filesystem;

namespace {

const char* const kExpectedLayouts =
    "expected ROOT/{train,val}/{nature,ai} or ROOT/<subset>/{train,val}/{nature,ai}";
const char* const kClassFolderNames = "nature or real (real images), ai or fake (generated)";
const char* const kSplitNames[] = {"train", "val", "test"};

std::string lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Sorted names of the visible subfolders of `dir`.
std::vector<std::string> subfolders(const fs::path& dir) {
  std::vector<std::string> names;
  for (const fs::directory_entry& entry : fs::directory_iterator(dir)) {
    if (entry.is_directory() && !is_hidden(entry.path()))
      names.push_back(entry.path().filename().string());
  }
  std::sort(names.begin(), names.end());
  return names;
}

bool has_split_folder(const fs::path& dir) {
  for (const char* split : kSplitNames) {
    if (fs::is_directory(dir / split)) return true;
  }
  return false;
}

// The folder's own name, also for "dir/", "." and "..".
std::string folder_name(const fs::path& dir) {
  fs::path p = fs::absolute(dir).lexically_normal();
  if (p.filename().empty()) p = p.parent_path();
  return p.filename().string();
}

struct Layout {
  bool one_subset = false;           // ROOT/{train,val}/...
  std::vector<std::string> subsets;  // sorted
  fs::path split_parent(const fs::path& root, const std::string& subset) const {
    return one_subset ? root : root / subset;
  }
};

Layout detect_layout(const fs::path& root) {
  ENGINE_CHECK(fs::exists(root), "dataset folder '", root.string(), "' does not exist; ",
               kExpectedLayouts);
  ENGINE_CHECK(fs::is_directory(root), "dataset path '", root.string(), "' is not a folder; ",
               kExpectedLayouts);
  Layout layout;
  if (has_split_folder(root)) {
    layout.one_subset = true;
    layout.subsets = {folder_name(root)};
    return layout;
  }
  layout.subsets = subfolders(root);
  ENGINE_CHECK(!layout.subsets.empty(), "dataset folder '", root.string(),
               "' has no train/val folders and no subset folders; ", kExpectedLayouts);
  for (const std::string& subset : layout.subsets) {
    ENGINE_CHECK(has_split_folder(root / subset), "dataset folder '", (root / subset).string(),
                 "' is neither a split (train, val, test) nor a subset with train/val folders "
                 "inside; ",
                 kExpectedLayouts);
  }
  return layout;
}

}  // namespace

bool is_hidden(const fs::path& p) { return p.filename().string().rfind('.', 0) == 0; }

bool has_image_extension(const fs::path& p) {
  const std::string ext = lowercase(p.extension().string());
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".bmp";
}

const char* label_name(int64_t label) { return label == kLabelReal ? "real" : "ai"; }

int64_t label_of_class_folder(const std::string& folder_name) {
  const std::string name = lowercase(folder_name);
  if (name == "nature" || name == "real") return kLabelReal;
  if (name == "ai" || name == "fake") return kLabelGenerated;
  return -1;
}

std::vector<size_t> Dataset::label_counts() const {
  std::vector<size_t> counts(2, 0);
  for (size_t i = 0; i < size(); ++i) ++counts.at(static_cast<size_t>(sample(i).label));
  return counts;
}

std::vector<std::string> list_subsets(const std::string& root) {
  try {
    return detect_layout(root).subsets;
  } catch (const fs::filesystem_error& e) {
    engine::detail::fail("dataset folder '", root, "': ", e.what());
  }
}

FolderDataset::FolderDataset(const std::string& root_name, const std::string& split,
                             const std::vector<std::string>& wanted_subsets, DecodeLimits limits)
    : split_(split), limits_(limits) {
  const fs::path root(root_name);
  try {
    const Layout layout = detect_layout(root);
    if (wanted_subsets.empty()) {
      subsets_ = layout.subsets;
    } else {
      const std::set<std::string> unique(wanted_subsets.begin(), wanted_subsets.end());
      for (const std::string& subset : unique) {
        if (!std::binary_search(layout.subsets.begin(), layout.subsets.end(), subset)) {
          std::ostringstream available;
          for (const std::string& s : layout.subsets) available << " " << s;
          engine::detail::fail("dataset folder '", root_name, "' has no subset '", subset,
                               "'; available:", available.str());
        }
      }
      subsets_.assign(unique.begin(), unique.end());
    }

    for (const std::string& subset : subsets_) {
      const fs::path split_dir = layout.split_parent(root, subset) / split;
      ENGINE_CHECK(fs::is_directory(split_dir), "missing folder '", split_dir.string(), "'; ",
                   kExpectedLayouts);
      std::set<int64_t> labels_found;
      for (const fs::directory_entry& entry : fs::directory_iterator(split_dir)) {
        if (!entry.is_directory()) ++ignored_files_;
      }
      const std::vector<std::string> class_folders = subfolders(split_dir);
      ENGINE_CHECK(!class_folders.empty(), "folder '", split_dir.string(),
                   "' has no class folders; expected ", kClassFolderNames);
      for (const std::string& class_folder : class_folders) {
        const fs::path class_dir = split_dir / class_folder;
        const int64_t label = label_of_class_folder(class_folder);
        ENGINE_CHECK(label >= 0, "unknown class folder '", class_dir.string(), "'; expected ",
                     kClassFolderNames);
        std::vector<std::string> paths;
        for (auto it = fs::recursive_directory_iterator(class_dir);
             it != fs::recursive_directory_iterator(); ++it) {
          if (it->is_directory()) {
            if (is_hidden(it->path())) it.disable_recursion_pending();  // .git, .ipynb_checkpoints
            continue;
          }
          if (has_image_extension(it->path()) && !is_hidden(it->path())) {
            paths.push_back(it->path().string());
          } else {
            ++ignored_files_;
          }
        }
        ENGINE_CHECK(!paths.empty(), "class folder '", class_dir.string(),
                     "' has no images (.jpg .jpeg .png .bmp)");
        std::sort(paths.begin(), paths.end());
        for (std::string& path : paths) samples_.push_back({std::move(path), label, subset});
        labels_found.insert(label);
      }
      ENGINE_CHECK(labels_found.size() == 2, "folder '", split_dir.string(), "' has only ",
                   label_name(*labels_found.begin()), " images; a detector needs both classes (",
                   kClassFolderNames, ")");
    }
  } catch (const fs::filesystem_error& e) {
    engine::detail::fail("dataset folder '", root_name, "': ", e.what());
  }
}

std::string FolderDataset::summary() const {
  std::map<std::string, std::vector<size_t>> counts;
  for (const Sample& s : samples_) {
    auto& c = counts[s.subset];
    c.resize(2);
    ++c[static_cast<size_t>(s.label)];
  }
  std::ostringstream os;
  for (const auto& [subset, c] : counts) {
    os << subset << "/" << split_ << ": " << c[0] << " real + " << c[1] << " ai\n";
  }
  if (ignored_files_) os << ignored_files_ << " non-image files ignored\n";
  return os.str();
}

}  // namespace data
