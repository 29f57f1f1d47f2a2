// SPDX-License-Identifier: Apache-2.0
// ConnectionCarrier — an engine StreamCarrier over a userstack Connection, so the framing
// engine can run one of its paths over a TCP connection terminated in lwIP (TUN ingress: the
// app's flow is accepted by the Stack and carried by the engine). The carrier owns the
// Connection; it belongs to |io| and invokes its handlers there (never inside the initiating
// call). The Connection's eventfd drives an asio descriptor wait; one read and one write may be
// pending at a time, as the engine uses carriers. close() ends the connection gracefully (FIN)
// and completes pending operations with operation_aborted. The Stack must outlive it.
#pragma once

#include <rendr/common/result.hpp>
#include <rendr/engine/carrier.hpp>
#include <rendr/userstack/stack.hpp>

namespace rendr::userstack {

// make_connection_carrier wraps |conn|. Errors: the errno of dup() on its eventfd.
[[nodiscard]] Result<StreamCarrierPtr> make_connection_carrier(asio::io_context& io,
                                                               ConnectionPtr conn);

}  // namespace rendr::userstack
