// What differs between the torch releases pykernels compiles against (torch 2.11 to 2.15), in one place, keyed on
// torch's version macros; the rest of csrc is written once against what they share.
#pragma once

#include <torch/csrc/autograd/function.h>
#include <torch/headeronly/version.h>

#include <memory>
#include <string_view>
#include <utility>

#define PYKERNELS_TORCH_AT_LEAST(major, minor) \
  (TORCH_VERSION_MAJOR > (major) || (TORCH_VERSION_MAJOR == (major) && TORCH_VERSION_MINOR >= (minor)))

namespace pykernels::compat {

// An owning pointer to an autograd graph node. torch 2.13 made nodes intrusively reference-counted
// (c10::intrusive_ptr<Node>); before, they are std::shared_ptr<Node>. set_history, rebase_history and Node's next
// edges take whichever the release uses.
#if PYKERNELS_TORCH_AT_LEAST(2, 13)
template <typename NodeT>
using NodePtr = c10::intrusive_ptr<NodeT>;

template <typename NodeT, typename... Args>
NodePtr<NodeT> make_node(Args&&... args) {
  return c10::make_intrusive<NodeT>(std::forward<Args>(args)...);
}
#else
template <typename NodeT>
using NodePtr = std::shared_ptr<NodeT>;

template <typename NodeT, typename... Args>
NodePtr<NodeT> make_node(Args&&... args) {
  return std::make_shared<NodeT>(std::forward<Args>(args)...);
}
#endif

// std::string::ends_with is C++20, and torch <= 2.12's cpp_extension compiles extensions as C++17.
inline bool ends_with(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

}  // namespace pykernels::compat
