# Finds every library minipretrain builds against (scripts/install_deps.sh
# installs them): LibTorch from the pinned torch wheel in .venv, which
# scripts/build.sh passes as -DCMAKE_PREFIX_PATH=$(python -c 'import torch;
# print(torch.utils.cmake_prefix_path)'); everything else from Debian 12.

# LibTorch's config searches the system for c10 before its own folder: a
# Debian libtorch-dev on the machine would be linked beside the wheel's.
find_library(C10_LIBRARY c10 PATHS ${CMAKE_PREFIX_PATH} PATH_SUFFIXES ../../lib NO_DEFAULT_PATH)
find_package(Torch REQUIRED)
if(Torch_VERSION VERSION_LESS 2.15)
  message(FATAL_ERROR "minipretrain needs LibTorch >= 2.15 (found ${Torch_VERSION}); "
                      "scripts/install_deps.sh installs the pinned torch into .venv")
endif()
find_package(CLI11 REQUIRED)
find_package(spdlog REQUIRED)
# The torch wheel ships fmt 12 among its headers; it would shadow Debian's fmt 9,
# which Debian's spdlog is built with (spdlog's headers then fail to compile).
# A folder holding only a link to Debian's fmt goes first on the include path.
find_package(fmt REQUIRED)
get_target_property(_fmt_include fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
list(GET _fmt_include 0 _fmt_include)
set(MINIPRETRAIN_FMT_FIRST ${CMAKE_BINARY_DIR}/fmt-first)
file(MAKE_DIRECTORY ${MINIPRETRAIN_FMT_FIRST})
file(CREATE_LINK ${_fmt_include}/fmt ${MINIPRETRAIN_FMT_FIRST}/fmt SYMBOLIC)
find_package(nlohmann_json REQUIRED)

# CUDA and NCCL are always built: the torch wheel is a CUDA build whose CMake
# config already requires the CUDA toolkit, and it brings NCCL. So the NCCL
# communicator and the GPU tests compile on every machine, GPU or not, and no
# code is left that only a machine without them would compile. NCCL is the
# wheel's (the one libtorch_cuda loads), not the toolkit's older copy.
find_package(CUDAToolkit REQUIRED)
get_filename_component(_wheel_nvidia "${Torch_DIR}/../../../../nvidia" ABSOLUTE)
find_path(NCCL_INCLUDE_DIR nccl.h HINTS ${_wheel_nvidia}/nccl/include ${CUDAToolkit_INCLUDE_DIRS} $ENV{NCCL_HOME}/include)
find_library(NCCL_LIBRARY NAMES nccl libnccl.so.2 NAMES_PER_DIR
             HINTS ${_wheel_nvidia}/nccl/lib ${CUDAToolkit_LIBRARY_DIR} $ENV{NCCL_HOME}/lib)
if(NOT NCCL_INCLUDE_DIR OR NOT NCCL_LIBRARY)
  message(FATAL_ERROR "NCCL not found (the torch wheel's nvidia-nccl package, or NCCL_HOME): run scripts/install_deps.sh")
endif()
add_library(minipretrain::nccl UNKNOWN IMPORTED)
set_target_properties(minipretrain::nccl PROPERTIES
  IMPORTED_LOCATION ${NCCL_LIBRARY}
  INTERFACE_INCLUDE_DIRECTORIES ${NCCL_INCLUDE_DIR})
message(STATUS "minipretrain: LibTorch ${Torch_VERSION}, CUDA ${CUDAToolkit_VERSION}, NCCL ${NCCL_LIBRARY}")

# SentencePiece (Debian's libsentencepiece-dev): the tokenizer.
find_package(PkgConfig REQUIRED)
pkg_check_modules(SENTENCEPIECE REQUIRED IMPORTED_TARGET sentencepiece)
pkg_check_modules(XXHASH REQUIRED IMPORTED_TARGET libxxhash)  # checkpoint hashes
