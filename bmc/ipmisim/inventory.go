package ipmisim

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// FRU is the BMC's Field Replaceable Unit inventory (FRU device 0): the
// chassis, board and product areas a real BMC is programmed with at the
// factory, and `ipmitool fru print` shows.
type FRU struct {
	ChassisPart, ChassisSerial                                    string
	BoardManufacturer, BoardProduct, BoardSerial, BoardPart       string
	ProductManufacturer, ProductName, ProductPart, ProductVersion string
	ProductSerial, ProductAssetTag                                string
}

// SensorKind is what a sensor measures.
type SensorKind int

const (
	Temperature SensorKind = iota + 1 // °C
	Fan                               // RPM
	PowerSupply                       // a discrete status: present, failed
)

// Sensor is one sensor of the BMC's SDR repository with its reading.
type Sensor struct {
	Number byte // unique per BMC
	Name   string
	Kind   SensorKind
	// Reading is in °C or RPM. A fan's reading is kept in steps of 100
	// RPM, as its record's conversion factor says.
	Reading float64
	// UpperCritical, when set, is the threshold a reading above which
	// the BMC reports critical (temperatures and fans).
	UpperCritical float64
	// Failed marks a power supply that reports a failure.
	Failed bool
}

// IPMI sensor types, entity IDs and units (IPMI 2.0 tables 42-3, 43-13,
// 43-15).
const (
	sensorTypeTemperature = 0x01
	sensorTypeFan         = 0x04
	sensorTypePowerSupply = 0x08
	readingThreshold      = 0x01
	readingSensorSpecific = 0x6f
	entityProcessor       = 0x03
	entityPowerSupply     = 0x0a
	entityFan             = 0x1d
	unitDegreesC          = 1
	unitRPM               = 18
)

// kind is how each sensor kind is described in its record.
type kind struct {
	sensorType, reading, entity, unit byte
	m                                 int // raw × m is the reading
}

var kinds = map[SensorKind]kind{
	Temperature: {sensorTypeTemperature, readingThreshold, entityProcessor, unitDegreesC, 1},
	Fan:         {sensorTypeFan, readingThreshold, entityFan, unitRPM, 100},
	PowerSupply: {sensorTypePowerSupply, readingSensorSpecific, entityPowerSupply, 0, 1},
}

// sensorCommands are the ipmi_sim commands that put sensors in the BMC's
// SDR repository (a Full Sensor Record each, IPMI 2.0 table 43-1) and
// give them their readings.
func sensorCommands(sensors []Sensor) (string, error) {
	var b strings.Builder
	seen := map[byte]bool{}
	for i, s := range sensors {
		k, ok := kinds[s.Kind]
		switch {
		case !ok:
			return "", fmt.Errorf("ipmisim: sensor %q: unknown kind %d", s.Name, s.Kind)
		case seen[s.Number]:
			return "", fmt.Errorf("ipmisim: sensor number %#x used twice", s.Number)
		case len(s.Name) == 0 || len(s.Name) > 16:
			return "", fmt.Errorf("ipmisim: sensor name %q must be 1-16 bytes", s.Name)
		}
		seen[s.Number] = true
		raw, err := rawValue(s.Reading, k.m)
		if err != nil {
			return "", fmt.Errorf("ipmisim: sensor %q: %w", s.Name, err)
		}
		var crit byte
		if s.UpperCritical > 0 {
			if crit, err = rawValue(s.UpperCritical, k.m); err != nil {
				return "", fmt.Errorf("ipmisim: sensor %q threshold: %w", s.Name, err)
			}
		}
		rec := fullSensorRecord(uint16(i+1), s, k, crit)
		fmt.Fprintf(&b, "main_sdr_add 0x20%s\n", hexBytes(rec))
		fmt.Fprintf(&b, "sensor_add 0x20 0 %#x %#x %#x\n", s.Number, k.sensorType, k.reading)
		switch {
		case k.reading == readingSensorSpecific:
			// Power supply states: bit 0 presence, bit 1 failure.
			fmt.Fprintf(&b, "sensor_set_bit 0x20 0 %#x 0 1 0\n", s.Number)
			if s.Failed {
				fmt.Fprintf(&b, "sensor_set_bit 0x20 0 %#x 1 1 0\n", s.Number)
			}
		default:
			if crit != 0 {
				// Upper critical only (threshold 4), readable.
				fmt.Fprintf(&b, "sensor_set_threshold 0x20 0 %#x readable 010000 0 %d 0 0 0 0\n", s.Number, crit)
			}
			fmt.Fprintf(&b, "sensor_set_value 0x20 0 %#x %d 0\n", s.Number, raw)
		}
	}
	return b.String(), nil
}

func rawValue(v float64, m int) (byte, error) {
	raw := math.Round(v / float64(m))
	if raw < 0 || raw > 255 {
		return 0, fmt.Errorf("reading %v out of range 0-%d", v, 255*m)
	}
	return byte(raw), nil
}

// fullSensorRecord is an SDR type 01h for s: unsigned, linear readings
// of raw × k.m, with an upper critical threshold when crit is set.
func fullSensorRecord(id uint16, s Sensor, k kind, crit byte) []byte {
	var readable byte
	caps := byte(0x40) // auto re-arm, no thresholds, no events
	if crit != 0 {
		readable = 1 << 4 // upper critical
		caps |= 0x04      // thresholds readable
	}
	mask := []byte{0, 0, 0, 0, readable, 0}
	if k.reading == readingSensorSpecific {
		// Discrete: which states the sensor reports.
		mask = []byte{0x03, 0, 0x03, 0, 0x03, 0}
	}
	rec := []byte{byte(id), byte(id >> 8), 0x51, 0x01, 0, // header; length below
		0x20, 0x00, s.Number, // owner: the BMC, LUN 0
		k.entity, 0x01, // entity and instance
		0x63, caps, k.sensorType, k.reading} // initialised: scanning, events
	rec = append(rec, mask...)
	rec = append(rec,
		0x00, k.unit, 0x00, // unsigned, base unit, no modifier
		0x00,                       // linear
		byte(k.m), byte(k.m>>8)<<6, // M, tolerance 0
		0x00, 0x00, 0x00, 0x00, // B 0, accuracy 0, exponents 0
		0x00,             // no nominal/normal values given
		0x00, 0x00, 0x00, // nominal, normal max, normal min
		0xff, 0x00, // sensor max, min
		0x00, crit, 0x00, // upper non-recoverable, critical, non-critical
		0x00, 0x00, 0x00, // lower ones
		0x00, 0x00, 0x00, 0x00, // hysteresis, reserved
		0x00, // OEM
		0xc0|byte(len(s.Name)))
	rec = append(rec, s.Name...)
	rec[4] = byte(len(rec) - 5)
	return rec
}

// fruCommand is the ipmi_sim command that gives the BMC FRU device 0
// with f's areas (IPMI Platform Management FRU Information Storage
// Definition v1.0: a common header, then chassis, board and product info
// areas, each of 8-byte multiples with a zero checksum).
func fruCommand(f FRU) (string, error) {
	chassis, err := area([]byte{0x17}, f.ChassisPart, f.ChassisSerial) // rack mount
	if err != nil {
		return "", err
	}
	board, err := area([]byte{0x00, 0, 0, 0}, f.BoardManufacturer, f.BoardProduct, f.BoardSerial, f.BoardPart, "") // English, no date
	if err != nil {
		return "", err
	}
	product, err := area([]byte{0x00}, f.ProductManufacturer, f.ProductName, f.ProductPart, f.ProductVersion, f.ProductSerial, f.ProductAssetTag, "")
	if err != nil {
		return "", err
	}
	header := []byte{0x01, 0x00, 1, byte(1 + len(chassis)/8), byte(1 + (len(chassis)+len(board))/8), 0x00, 0x00, 0}
	header[7] = checksum(header[:7])
	data := append(append(append(header, chassis...), board...), product...)
	return fmt.Sprintf("mc_add_fru_data 0x20 0 %#x data%s\n", len(data), hexBytes(data)), nil
}

// area is one FRU info area: version, length, the fixed bytes, each field
// as 8-bit ASCII, the end marker, padding and checksum.
func area(fixed []byte, fields ...string) ([]byte, error) {
	a := append([]byte{0x01, 0}, fixed...)
	for _, s := range fields {
		if len(s) > 63 {
			return nil, errors.New("ipmisim: FRU field longer than 63 bytes: " + s)
		}
		a = append(append(a, 0xc0|byte(len(s))), s...)
	}
	a = append(a, 0xc1)
	for (len(a)+1)%8 != 0 {
		a = append(a, 0)
	}
	a[1] = byte((len(a) + 1) / 8)
	return append(a, checksum(a)), nil
}

func checksum(b []byte) byte {
	var sum byte
	for _, x := range b {
		sum += x
	}
	return -sum
}

func hexBytes(b []byte) string {
	var s strings.Builder
	for _, x := range b {
		fmt.Fprintf(&s, " %#02x", x)
	}
	return s.String()
}
