// Datasets of labelled images: image folders on disk, and (data/synthetic.h) generated ones.
//
// Folder layouts (the GenImage / Tiny-GenImage convention), both accepted:
//   ROOT/{train,val}/{nature,ai}/*            one subset, named after ROOT's folder
//   ROOT/<subset>/{train,val}/{nature,ai}/*   several generator subsets, each evaluated alone
// Class folders: `nature` or `real` -> label 0 (real), `ai` or `fake` -> label 1 (generated),
// case-insensitive. The labels are fixed by name, never by sort order (the reference sorted
// folders alphabetically, making `ai` 0, and then read its own labels the wrong way round).
// Images: .jpg .jpeg .png .bmp (any case), found recursively in a class folder; other files
// are ignored and counted. Samples are ordered by subset, class folder, then path (byte-wise),
// so a dataset lists the same samples in the same order on every machine.
#pragma once
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data/image.h"

namespace data {

constexpr int64_t kLabelReal = 0;
constexpr int64_t kLabelGenerated = 1;
// "real" or "ai", for reports.
const char* label_name(int64_t label);
// The label a class folder stands for, or -1 for an unknown name.
int64_t label_of_class_folder(const std::string& folder_name);

// The files image folders are made of: .jpg .jpeg .png .bmp (any case), not hidden (".x").
bool has_image_extension(const std::filesystem::path& p);
bool is_hidden(const std::filesystem::path& p);  // files and folders whose name starts with '.'

struct Sample {
  std::string path;  // the file, or a descriptive name for generated samples
  int64_t label = 0;
  std::string subset;
};

// The interface the loader reads. load() must be safe to call from several threads at once.
class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual size_t size() const = 0;
  virtual const Sample& sample(size_t index) const = 0;
  // Decodes sample `index`; throws DecodeError when its file is unreadable or corrupt.
  virtual Image load(size_t index) const = 0;
  // The subsets present, sorted.
  virtual std::vector<std::string> subsets() const = 0;
  // Number of samples per label: {real, generated}.
  std::vector<size_t> label_counts() const;
};

// The subsets under `root`, sorted: the root folder's name for the one-subset layout, the
// subset folders otherwise. Throws engine::Error naming the path and the expected layouts.
std::vector<std::string> list_subsets(const std::string& root);

class FolderDataset : public Dataset {
 public:
  // The samples of `split` ("train", "val", ...) from the named subsets, or all when `subsets`
  // is empty. Every folder error (missing, empty, one class only, unknown class folder) is
  // thrown here as an engine::Error naming the path, before any training starts.
  FolderDataset(const std::string& root, const std::string& split,
                const std::vector<std::string>& subsets = {}, DecodeLimits limits = {});

  size_t size() const override { return samples_.size(); }
  const Sample& sample(size_t index) const override { return samples_.at(index); }
  Image load(size_t index) const override {
    return decode_image_file(samples_.at(index).path, limits_);
  }
  std::vector<std::string> subsets() const override { return subsets_; }

  // Files in class folders that are not images by extension (hidden files included).
  size_t ignored_files() const { return ignored_files_; }
  // "cifake/train: 4000 real + 4000 ai" lines, one per subset, plus the ignored count.
  std::string summary() const;

 private:
  std::vector<Sample> samples_;
  std::vector<std::string> subsets_;
  std::string split_;
  size_t ignored_files_ = 0;
  DecodeLimits limits_;
};

}  // namespace data
