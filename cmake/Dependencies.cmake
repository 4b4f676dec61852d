# Finds every library minipretrain builds against. All come from Debian 12's
# packages (scripts/install_deps.sh); a CUDA build of LibTorch can be chosen
# with -DCMAKE_PREFIX_PATH=$(python -c 'import torch; print(torch.utils.cmake_prefix_path)').

find_package(Torch REQUIRED)
find_package(CLI11 REQUIRED)
find_package(spdlog REQUIRED)
find_package(nlohmann_json REQUIRED)

# The NCCL communicator is plain NCCL on device pointers, so it builds whenever
# the CUDA toolkit ships NCCL, even next to a CPU-only LibTorch.
set(MINIPRETRAIN_WITH_NCCL OFF)
if(NOT DEFINED CUDAToolkit_ROOT AND EXISTS /usr/local/cuda)
  set(CUDAToolkit_ROOT /usr/local/cuda)
endif()
find_package(CUDAToolkit QUIET)
if(CUDAToolkit_FOUND)
  find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${CUDAToolkit_INCLUDE_DIRS} $ENV{NCCL_HOME}/include)
  find_library(NCCL_LIBRARY nccl HINTS ${CUDAToolkit_LIBRARY_DIR} $ENV{NCCL_HOME}/lib)
  if(NCCL_INCLUDE_DIR AND NCCL_LIBRARY)
    add_library(minipretrain::nccl UNKNOWN IMPORTED)
    set_target_properties(minipretrain::nccl PROPERTIES
      IMPORTED_LOCATION ${NCCL_LIBRARY}
      INTERFACE_INCLUDE_DIRECTORIES ${NCCL_INCLUDE_DIR})
    set(MINIPRETRAIN_WITH_NCCL ON)
  endif()
endif()
message(STATUS "minipretrain: NCCL communicator ${MINIPRETRAIN_WITH_NCCL}")

# SentencePiece (Debian's libsentencepiece-dev), for minipretrain-text only.
find_package(PkgConfig REQUIRED)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)  # checkpoint hashes
