package dhcp

import "github.com/metal-dev/metal/pxe"

// The helpers of the in-package tests, for the tests of package dhcp_test:
// those that drive a server over the inventory store's lease adapter
// (pxe/storeleases), which imports this package.
var (
	CheckRestartKeepsLeases = checkRestartKeepsLeases
	Discover                = discover
	Dora                    = dora
	EnvScript               = envScript
	Exchange                = exchange
	LabConfig               = labConfig
	Msg                     = msg
	NewTestPolicy           = newTestPolicy
	NewUnitHandler          = newUnitHandler
	Request                 = request
	StartServer             = startServer
	Tlog                    = tlog
	Udhcpc                  = udhcpc
	UDPIn                   = udpIn
	UnitConfig              = unitConfig
)

const ClientPort = clientPort

type TestPolicy = testPolicy

// Hosts returns the hosts the policy was made with.
func (p *testPolicy) Hosts() map[string]pxe.Host { return p.hosts }
