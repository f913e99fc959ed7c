// Unlabelled images named on a command line: any mix of files and folders, for prediction.
//
// A folder is searched recursively for .jpg .jpeg .png .bmp files (any case), passing over
// hidden files and folders (.git, .ipynb_checkpoints) as FolderDataset does. A file named
// directly is taken whatever its extension or state: the user asked for it, so a missing,
// unreadable or non-image file is reported when it is decoded instead of being left out
// without a word. The list is sorted byte-wise and duplicates are dropped, so the same
// arguments give the same order on every machine.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/dataset.h"

namespace data {

// The label of a sample whose class is unknown: these images are to be classified.
constexpr int64_t kLabelUnknown = -1;

// The image files under `inputs` (see the header comment). Throws engine::Error naming the
// folder when a folder holds no images or cannot be read, and when `inputs` is empty.
std::vector<std::string> find_image_files(const std::vector<std::string>& inputs);

class FileListDataset : public Dataset {
 public:
  // One sample per path, in the given order, label kLabelUnknown, no subset.
  explicit FileListDataset(const std::vector<std::string>& paths, DecodeLimits limits = {});

  size_t size() const override { return samples_.size(); }
  const Sample& sample(size_t index) const override { return samples_.at(index); }
  Image load(size_t index) const override { return decode_image_file(samples_.at(index).path, limits_); }
  std::vector<std::string> subsets() const override { return {}; }

 private:
  std::vector<Sample> samples_;
  DecodeLimits limits_;
};

}  // namespace data
