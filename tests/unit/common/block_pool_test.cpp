// SPDX-License-Identifier: Apache-2.0
// BlockPool: blocks of one size, given back when their Block goes, kept up to the bound and
// handed to the next taker; moves transfer ownership.
#include <rendr/common/block_pool.hpp>

#include <catch2/catch.hpp>

#include <cstring>
#include <set>
#include <utility>
#include <vector>

using rendr::BlockPool;

TEST_CASE("block pool: a block given back is the next one taken", "[common][block_pool]") {
  BlockPool pool(4096, 2);
  std::byte* first = nullptr;
  {
    auto b = pool.take();
    REQUIRE(b.data() != nullptr);
    CHECK(b.size() == 4096);
    std::memset(b.data(), 0x5a, b.size());  // the whole block is ours to write
    first = b.data();
    CHECK(pool.free_blocks() == 0);
  }
  CHECK(pool.free_blocks() == 1);
  auto again = pool.take();
  CHECK(again.data() == first);
  CHECK(pool.free_blocks() == 0);
}

TEST_CASE("block pool: at most |keep| blocks are kept, the rest are freed",
          "[common][block_pool]") {
  BlockPool pool(1024, 3);
  std::vector<BlockPool::Block> many;
  std::set<std::byte*> distinct;
  for (int i = 0; i < 8; ++i) {
    many.push_back(pool.take());
    distinct.insert(many.back().data());
  }
  CHECK(distinct.size() == 8);  // no block handed out twice
  many.clear();
  CHECK(pool.free_blocks() == 3);
}

TEST_CASE("block pool: a moved block is given back once, by its last owner",
          "[common][block_pool]") {
  BlockPool pool(512, 4);
  auto a = pool.take();
  std::byte* p = a.data();
  BlockPool::Block b(std::move(a));
  CHECK(a.data() == nullptr);  // NOLINT(bugprone-use-after-move): moved-from is empty
  CHECK(a.size() == 0);        // NOLINT(bugprone-use-after-move)
  CHECK(b.data() == p);
  BlockPool::Block c;
  c = std::move(b);
  CHECK(c.data() == p);
  CHECK(pool.free_blocks() == 0);
  c.reset();
  CHECK(c.data() == nullptr);
  CHECK(pool.free_blocks() == 1);
  c.reset();  // twice: nothing more given back
  CHECK(pool.free_blocks() == 1);
}
