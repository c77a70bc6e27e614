/* hr_torch_malloc's failure path under C++, as PyTorch calls it: a raise
 * hook that throws must unwind through the library's C frames back to the
 * caller and leave the pool consistent. First with a hook of our own that
 * throws std::runtime_error, then with the real c10::detail::torchCheckFail
 * from the libc10 of Debian's PyTorch, caught as std::exception (skipped
 * with a reason where no libc10 is installed), and from four threads at
 * once (labelled "threads" for the TSan build). The pools run on the sim
 * backend with memory_fraction:0.001 of its 80 GiB, about 82 MiB. */
#include "hr_test.h"
#include <cxxabi.h>
#include <dlfcn.h>

#include <atomic>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <string>
#include <typeinfo>
#include <vector>

static const uint64_t CHUNK = 8ull << 20;
static const char *CHECK_FAIL_SYM = "_ZN3c106detail14torchCheckFailEPKcS2_jS2_";

static std::string last_func, last_file;
static std::atomic<int> hook_calls;
static std::mutex hook_mu;

static void throwing_hook(const char *func, const char *file, uint32_t line, const char *msg) {
  hook_calls++;
  {
    std::lock_guard<std::mutex> g(hook_mu);
    last_func = func;
    last_file = file;
  }
  throw std::runtime_error(std::string(msg) + " (line " + std::to_string(line) + ")");
}

/* A C++ frame between the catch and the C code, whose destructor must run
 * while the exception passes. */
static std::atomic<int> guards_destroyed;
struct guard {
  ~guard() {
    guards_destroyed++;
  }
};
static void *alloc_guarded(uint64_t size, int device) {
  guard g;
  return hr_torch_malloc((ssize_t)size, device, nullptr);
}

/* Allocates CHUNK blocks on `device` until an exception, which it returns
 * through *what (empty when none came within `limit` blocks). */
static void fill_until_throw(int device, std::vector<void *> &blocks, std::string &what,
                             std::string &type, size_t limit) {
  for (size_t i = 0; i < limit; i++) {
    try {
      void *p = alloc_guarded(CHUNK, device);
      if (!p) {
        what = "(NULL returned)";
        return;
      }
      blocks.push_back(p);
    } catch (const std::exception &e) {
      what = e.what();
      type = typeid(e).name();
      return;
    }
  }
}

static void free_all(int device, std::vector<void *> &blocks) {
  for (void *p : blocks) hr_torch_free(p, (ssize_t)CHUNK, device, nullptr);
  blocks.clear();
}

/* Everything a caught out-of-memory failure must leave: the message, a pool
 * that passes its checks with every block still live, room again once a
 * block is freed. */
static void check_after_oom(int device, std::vector<void *> &blocks, const std::string &what) {
  hr_pool_t *p = hr_torch_pool(device);
  CHECK(p != nullptr);
  CHECK(blocks.size() >= 4);
  CHECK_CONTAINS(what.c_str(), "CUDA out of memory. Tried to allocate 8.00 MiB on device ");
  CHECK_CONTAINS(what.c_str(), "headroom's pool: out of memory on device ");
  CHECK_CONTAINS(what.c_str(), "(limit");
  CHECK_CONTAINS(what.c_str(), "largest free block");
  CHECK_CONTAINS(what.c_str(), "device free");
  CHECK_CONTAINS(what.c_str(), "Hint:");
  CHECK_OK(hr_pool_check(p));
  hr_pool_stats_t st = {};
  st.size = sizeof st;
  CHECK_OK(hr_pool_stats(p, &st));
  CHECK_EQ_U64(st.allocation.current, blocks.size());
  CHECK(st.num_ooms >= 1);
  /* Free one block: the same request fits again. */
  hr_torch_free(blocks.back(), (ssize_t)CHUNK, device, nullptr);
  blocks.pop_back();
  void *again = hr_torch_malloc((ssize_t)CHUNK, device, nullptr);
  CHECK(again != nullptr);
  blocks.push_back(again);
  CHECK_OK(hr_pool_check(p));
  free_all(device, blocks);
  CHECK_OK(hr_pool_check(p));
  CHECK_OK(hr_pool_stats(p, &st));
  CHECK_EQ_U64(st.allocated_bytes.current, 0);
}

static void test_hook_throws_through_malloc(void) {
  std::vector<void *> blocks;
  std::string what, type;
  hook_calls = guards_destroyed = 0;
  hr_torch_set_oom_raise(throwing_hook);
  fill_until_throw(0, blocks, what, type, 64);
  hr_torch_set_oom_raise(nullptr);
  CHECK_MSG(hook_calls == 1, "hook called %d times", hook_calls.load());
  CHECK_MSG(guards_destroyed == (int)blocks.size() + 1, "%d guards destroyed for %zu calls",
            guards_destroyed.load(), blocks.size() + 1);
  CHECK_STR(last_func.c_str(), "hr_torch_malloc");
  CHECK_CONTAINS(last_file.c_str(), "torch.c");
  CHECK_MSG(what.rfind("CUDA out of memory.", 0) == 0, "message: %s", what.c_str());
  CHECK_CONTAINS(what.c_str(), "on device 0.");
  /* About 82 MiB of room: ten 8 MiB blocks at most. */
  CHECK(blocks.size() <= 10);
  check_after_oom(0, blocks, what);
}

/* Four threads fill one pool until each is refused: every refusal is an
 * exception in its own thread, and the pool stays whole. */
static void test_threads_run_out_together(void) {
  const int nthreads = 4;
  std::vector<std::vector<void *>> blocks(nthreads);
  std::vector<std::string> whats(nthreads);
  std::vector<std::thread> threads;
  hr_torch_set_oom_raise(throwing_hook);
  for (int t = 0; t < nthreads; t++)
    threads.emplace_back([t, &blocks, &whats] {
      std::string type;
      fill_until_throw(3, blocks[t], whats[t], type, 64);
    });
  for (std::thread &th : threads) th.join();
  hr_torch_set_oom_raise(nullptr);
  size_t total = 0;
  for (int t = 0; t < nthreads; t++) {
    CHECK_MSG(whats[t].rfind("CUDA out of memory.", 0) == 0, "thread %d: '%s'", t,
              whats[t].c_str());
    total += blocks[t].size();
  }
  hr_pool_t *p = hr_torch_pool(3);
  CHECK(p != nullptr);
  CHECK_OK(hr_pool_check(p));
  hr_pool_stats_t st = {};
  st.size = sizeof st;
  CHECK_OK(hr_pool_stats(p, &st));
  CHECK_EQ_U64(st.allocation.current, total);
  CHECK(total >= 4 && total <= 10);
  for (int t = 0; t < nthreads; t++) free_all(3, blocks[t]);
  CHECK_OK(hr_pool_check(p));
  CHECK_OK(hr_pool_stats(p, &st));
  CHECK_EQ_U64(st.allocated_bytes.current, 0);
}

static void test_size_zero_is_null_without_error(void) {
  hook_calls = 0;
  hr_torch_set_oom_raise(throwing_hook);
  void *p = hr_torch_malloc(0, 0, nullptr);
  hr_torch_set_oom_raise(nullptr);
  CHECK(p == nullptr);
  CHECK_EQ_INT(hook_calls.load(), 0);
}

static void test_huge_request_raises(void) {
  std::string what;
  hr_torch_set_oom_raise(throwing_hook);
  try {
    hr_torch_malloc(-1, 0, nullptr); /* a size_t past 8 EiB, as PyTorch would pass it */
  } catch (const std::exception &e) {
    what = e.what();
  }
  hr_torch_set_oom_raise(nullptr);
  CHECK_MSG(what.rfind("CUDA out of memory. Tried to allocate ", 0) == 0, "message: '%s'",
            what.c_str());
  CHECK_OK(hr_pool_check(hr_torch_pool(0)));
}

static std::string log_text;
static void capture_log(hr_log_level_t level, const char *msg, void *arg) {
  if (level == HR_LOG_ERROR) log_text += std::string(msg) + "\n";
}

static void test_without_hook_null_and_one_error(void) {
  std::vector<void *> blocks;
  std::string what, type;
  log_text.clear();
  hr_set_log(capture_log, nullptr, HR_LOG_ERROR);
  fill_until_throw(0, blocks, what, type, 64);
  void *second = hr_torch_malloc((ssize_t)CHUNK, 0, nullptr);
  hr_set_log(nullptr, nullptr, HR_LOG_WARN);
  CHECK_STR(what.c_str(), "(NULL returned)");
  CHECK(second == nullptr);
  CHECK_CONTAINS(log_text.c_str(), "CUDA out of memory.");
  CHECK_CONTAINS(log_text.c_str(), "illegal memory access");
  /* Logged once, not once per failure. */
  CHECK(log_text.find("illegal memory access") == log_text.rfind("illegal memory access"));
  CHECK_OK(hr_pool_check(hr_torch_pool(0)));
  free_all(0, blocks);
}

static void test_free_of_a_foreign_pointer_is_logged(void) {
  static char foreign[64];
  log_text.clear();
  hr_set_log(capture_log, nullptr, HR_LOG_ERROR);
  hr_torch_free(foreign, sizeof foreign, 0, nullptr);
  hr_torch_free(foreign, sizeof foreign, 7, nullptr); /* a device with no pool */
  hr_torch_free(nullptr, 0, 0, nullptr);              /* PyTorch's empty tensors: nothing */
  hr_set_log(nullptr, nullptr, HR_LOG_WARN);
  CHECK_CONTAINS(log_text.c_str(), "is not a live block of device 0's pool");
  CHECK_CONTAINS(log_text.c_str(), "is not a live block of device 7's pool");
  /* Two complaints, none for the NULL. */
  size_t n = 0;
  for (size_t at = log_text.find("hr_torch_free:"); at != std::string::npos;
       at = log_text.find("hr_torch_free:", at + 1))
    n++;
  CHECK_EQ_INT(n, 2);
  CHECK_OK(hr_pool_check(hr_torch_pool(0)));
}

static void test_pool_that_cannot_be_made_raises(void) {
  std::string what;
  setenv("HEADROOM_ALLOC_CONF", "max_split_size_mb:oops", 1);
  hr_options_process_reload();
  hr_torch_set_oom_raise(throwing_hook);
  try {
    hr_torch_malloc(4096, 2, nullptr);
  } catch (const std::exception &e) {
    what = e.what();
  }
  std::string again;
  try {
    hr_torch_malloc(4096, 2, nullptr); /* not retried: the same reason */
  } catch (const std::exception &e) {
    again = e.what();
  }
  std::string range;
  try {
    hr_torch_malloc(4096, 99, nullptr);
  } catch (const std::exception &e) {
    range = e.what();
  }
  hr_torch_set_oom_raise(nullptr);
  setenv("HEADROOM_ALLOC_CONF", "memory_fraction:0.001", 1);
  hr_options_process_reload();
  CHECK_MSG(what.rfind("headroom: no pool for device 2: HEADROOM_ALLOC_CONF", 0) == 0,
            "message: '%s'", what.c_str());
  CHECK_CONTAINS(what.c_str(), "max_split_size_mb");
  CHECK_MSG(again.rfind("headroom: no pool for device 2: HEADROOM_ALLOC_CONF", 0) == 0,
            "message: '%s'", again.c_str());
  CHECK_MSG(range.rfind("headroom: device 99 is out of range", 0) == 0, "message: '%s'",
            range.c_str());
  CHECK(hr_torch_pool(2) == nullptr);
}

/* The libc10 next to Debian's PyTorch: where python3's torch says, else the
 * system library directory. */
static void *open_libc10(std::string &where) {
  std::vector<std::string> paths;
  const char *env = getenv("HR_LIBC10");
  if (env && *env) paths.push_back(env);
  FILE *f = popen("/usr/bin/python3 -c 'import os, torch; "
                  "print(os.path.join(os.path.dirname(torch.__file__), \"lib\", \"libc10.so\"))' "
                  "2>/dev/null",
                  "r");
  if (f) {
    char line[4096] = "";
    if (fgets(line, sizeof line, f)) {
      line[strcspn(line, "\n")] = 0;
      if (*line) paths.push_back(line);
    }
    pclose(f);
  }
  paths.push_back("/usr/lib/x86_64-linux-gnu/libc10.so");
  paths.push_back("libc10.so");
  for (const std::string &p : paths) {
    void *h = dlopen(p.c_str(), RTLD_NOW | RTLD_GLOBAL);
    if (h) {
      where = p;
      return h;
    }
    where += p + ": " + dlerror() + "; ";
  }
  return nullptr;
}

static void test_real_torch_check_fail(void) {
  std::string where;
  void *h = open_libc10(where);
  if (!h) SKIP("no libc10 (PyTorch's core library) here: %s", where.c_str());
  void *sym = dlsym(h, CHECK_FAIL_SYM);
  if (!sym) SKIP("%s has no %s", where.c_str(), CHECK_FAIL_SYM);
  hr_torch_raise_fn fn;
  memcpy(&fn, &sym, sizeof fn);
  fprintf(stderr, "  libc10: %s\n", where.c_str());
  std::vector<void *> blocks;
  std::string what, type;
  hr_torch_set_oom_raise(fn);
  fill_until_throw(1, blocks, what, type, 64);
  hr_torch_set_oom_raise(nullptr);
  int status = 0;
  char *demangled = abi::__cxa_demangle(type.c_str(), nullptr, nullptr, &status);
  std::string tname = demangled ? demangled : type;
  free(demangled);
  CHECK_MSG(tname == "c10::Error", "caught %s: %s", tname.c_str(), what.c_str());
  CHECK_CONTAINS(what.c_str(), "CUDA out of memory. Tried to allocate 8.00 MiB on device 1.");
  CHECK_CONTAINS(what.c_str(), "hr_torch_malloc"); /* c10 names where it was raised */
  check_after_oom(1, blocks, what);
}

int main(void) {
  setenv("HEADROOM_POOL_BACKEND", "sim", 1);
  hr_options_process_reload();
  setenv("HEADROOM_ALLOC_CONF", "memory_fraction:0.001", 1);
  hr_options_process_reload();
  HR_RUN(test_hook_throws_through_malloc);
  HR_RUN(test_threads_run_out_together);
  HR_RUN(test_size_zero_is_null_without_error);
  HR_RUN(test_huge_request_raises);
  HR_RUN(test_without_hook_null_and_one_error);
  HR_RUN(test_free_of_a_foreign_pointer_is_logged);
  HR_RUN(test_pool_that_cannot_be_made_raises);
  HR_RUN(test_real_torch_check_fail);
  return hr_test_finish("test_torch_oom");
}
