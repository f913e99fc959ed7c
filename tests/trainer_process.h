// Runs the trainer program (TRAINER_PATH, set by tests/CMakeLists.txt) as a child process, for
// the crash and fault tests: extra environment, a file-size limit, another user, SIGKILL
// after a delay. Also: scratch folders (on tmpfs where there is room) and file hashes.
#pragma once
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#ifndef TRAINER_PATH
#error "tests/CMakeLists.txt defines TRAINER_PATH for the tests that run the trainer"
#endif

extern char** environ;

namespace trainer_process {

namespace fs = std::filesystem;

// A scratch folder, removed at the end. On /dev/shm when it has room: checkpoints of ResNet50
// are 190-280 MB and are written many times; a kill test concerns the process, not the disk,
// and the page cache is what a killed process leaves behind either way.
struct ScratchDir {
  fs::path path;
  explicit ScratchDir(const std::string& name) {
    fs::path base = fs::temp_directory_path();
    struct statvfs vfs {};
    if (::statvfs("/dev/shm", &vfs) == 0 && static_cast<double>(vfs.f_bavail) * vfs.f_frsize > 3e9) base = "/dev/shm";
    path = base / (name + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, fs::perm_options::add, ec);
    fs::remove_all(path, ec);
  }
  std::string sub(const std::string& name) const { return (path / name).string(); }
};

struct Options {
  std::vector<std::string> env;  // "NAME=value", added to this process's environment
  rlim_t max_file_bytes = RLIM_INFINITY;  // RLIMIT_FSIZE, with SIGXFSZ ignored: writes fail with EFBIG
  bool as_nobody = false;                 // run as uid/gid 65534 (the caller must be root)
  std::string log;                        // stdout and stderr go here
};

// Starts the trainer with `args`. Everything the child needs is prepared before fork(): the
// child only calls async-signal-safe functions before exec.
inline pid_t start(const std::vector<std::string>& args, const Options& options) {
  std::vector<std::string> argv_strings{TRAINER_PATH};
  argv_strings.insert(argv_strings.end(), args.begin(), args.end());
  std::vector<char*> argv, envp;
  for (auto& a : argv_strings) argv.push_back(a.data());
  argv.push_back(nullptr);
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  env_strings.insert(env_strings.end(), options.env.begin(), options.env.end());
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  int log = ::open(options.log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (log < 0) return -1;
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(log, 1);
    ::dup2(log, 2);
    if (options.max_file_bytes != RLIM_INFINITY) {
      struct rlimit limit {options.max_file_bytes, options.max_file_bytes};
      ::signal(SIGXFSZ, SIG_IGN);
      if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(126);
    }
    if (options.as_nobody && (::setgroups(0, nullptr) != 0 || ::setgid(65534) != 0 || ::setuid(65534) != 0))
      ::_exit(126);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(log);
  return pid;
}

struct Outcome {
  bool killed = false;  // ended by SIGKILL (ours or its own)
  int code = -1;        // exit code when it exited
  std::string describe() const { return killed ? "killed by SIGKILL" : "exit code " + std::to_string(code); }
};

// Waits for the child; after `kill_after_s` seconds (if >= 0) sends it SIGKILL.
inline Outcome wait(pid_t pid, double kill_after_s = -1) {
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(kill_after_s);
  int status = 0;
  for (;;) {
    pid_t done = ::waitpid(pid, &status, kill_after_s >= 0 ? WNOHANG : 0);
    if (done == pid) break;
    if (done < 0 && errno != EINTR) return {};
    if (kill_after_s >= 0 && std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      kill_after_s = -1;  // now wait without a deadline
    } else if (kill_after_s >= 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  }
  Outcome o;
  if (WIFSIGNALED(status)) o.killed = WTERMSIG(status) == SIGKILL;
  if (WIFEXITED(status)) o.code = WEXITSTATUS(status);
  return o;
}

inline Outcome run(const std::vector<std::string>& args, const Options& options) {
  pid_t pid = start(args, options);
  return pid < 0 ? Outcome{} : wait(pid);
}

inline std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

// A hash of the file from byte `from` on (0 when it cannot be read): equal hashes mean equal
// bytes here.
inline size_t file_hash(const std::string& path, size_t from = 0) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  struct stat st {};
  ::fstat(fd, &st);
  size_t size = static_cast<size_t>(st.st_size), hash = 0;
  void* map = size && from <= size ? ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0) : nullptr;
  ::close(fd);
  if (map == MAP_FAILED || from > size) return 0;
  hash = std::hash<std::string_view>()(std::string_view(static_cast<const char*>(map) + from, size - from)) ^ size;
  if (map) ::munmap(map, size);
  return hash;
}

// Files in `folder` whose name contains ".tmp-" (what a killed writer leaves).
inline std::vector<std::string> temporaries(const std::string& folder) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(folder, ec))
    if (e.path().filename().string().find(".tmp-") != std::string::npos) found.push_back(e.path().string());
  return found;
}

}  // namespace trainer_process
